//! The tower `Layer` and `Service` that give every request a [`Session`] and commit it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use http::{header, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::SessionConfig;
use crate::cookie::{self, Found};
use crate::error::{error_response, wants_html, ErrorMarker};
use crate::guard::Guarded;
use crate::keyring::Verified;
use crate::metrics::{bump, SessionMetrics};
use crate::session::{CookieOut, Session, Shared};
use crate::store::{SessionStore, StoreError, StoreStats};

/// Adds sessions to an axum/tower service. Clone it freely: clones share the store, the
/// configuration and the metrics.
///
/// ```
/// use axum::{routing::get, Router};
/// use cloakroom::{KeyRing, MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
///
/// async fn visits(session: Session) -> Result<String, SessionError> {
///     let n = session.increment("visits", 1).await?;
///     Ok(format!("you have been here {n} times"))
/// }
///
/// let config = SessionConfig::builder(KeyRing::generate().unwrap()).build().unwrap();
/// let app: Router = Router::new()
///     .route("/", get(visits))
///     .layer(SessionLayer::new(MemoryStore::default(), config));
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl SessionLayer {
    /// A layer over `store` with `config`.
    pub fn new(store: impl SessionStore, config: SessionConfig) -> Self {
        Self::from_arc(Arc::new(store), config)
    }

    /// A layer over a store that is already shared.
    pub fn from_arc(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        let store = Guarded::new(
            store,
            config.store_timeout,
            config.breaker_threshold,
            config.breaker_cooldown,
        );
        Self {
            shared: Arc::new(Shared { config, store }),
        }
    }

    /// The layer's counters.
    #[must_use]
    pub fn metrics(&self) -> Arc<SessionMetrics> {
        self.shared.store.metrics.clone()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// The store, unguarded (for operator tools).
    #[must_use]
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.shared.store.store.clone()
    }

    /// Asks the store whether it answers, through the timeout and breaker (for `/readyz`).
    ///
    /// # Errors
    /// The store's error, [`StoreError::Timeout`], or [`StoreError::CircuitOpen`].
    pub async fn ready(&self) -> Result<StoreStats, StoreError> {
        if self.shared.store.is_open() {
            return Err(StoreError::CircuitOpen);
        }
        let store = &self.shared.store;
        store.call(store.store.stats()).await
    }

    /// The session a request would get, without running a service (for tests and tools).
    #[must_use]
    pub fn session_for(&self, headers: &http::HeaderMap) -> Session {
        let config = &self.shared.config;
        let cookie = match cookie::find(headers, &config.cookie_name) {
            Found::Absent => None,
            Found::Malformed => {
                self.reject("malformed or duplicated");
                None
            }
            Found::One(value) => match config.keys.verify(&value) {
                Some(Verified::Current(id)) => Some((id, false)),
                Some(Verified::Stale(id)) => Some((id, true)),
                None => {
                    self.reject("bad signature");
                    None
                }
            },
        };
        Session::new(self.shared.clone(), cookie)
    }

    fn reject(&self, why: &'static str) {
        bump(&self.shared.store.metrics.rejected_cookies);
        tracing::info!(reason = why, "session cookie refused");
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    layer: SessionLayer,
}

impl<S, B> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let session = self.layer.session_for(request.headers());
        let html = wants_html(request.headers());
        request.extensions_mut().insert(session.clone());
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.layer.shared.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(finish(&shared, &session, response, html).await)
        })
    }
}

/// Commits the session and decorates the response; runs before the response head is sent.
async fn finish(
    shared: &Shared,
    session: &Session,
    mut response: Response,
    html: bool,
) -> Response {
    if html {
        if let Some(marker) = response.extensions().get::<ErrorMarker>().copied() {
            response = error_response(marker.status, marker.message, true);
        }
    }
    let (action, value) = match session.commit().await {
        Ok(outcome) => outcome,
        Err(error) => {
            // An unacknowledged write must not look like a success.
            tracing::warn!(%error, "session commit failed");
            return error_response(
                error.status(),
                "session store unavailable, please retry",
                html,
            );
        }
    };
    let cookie = match (action, value) {
        (CookieOut::Set, Some(value)) => {
            let max_age = session.cookie_max_age().await;
            Some(cookie::set(&shared.config, &value, max_age))
        }
        (CookieOut::Remove, _) => Some(cookie::removal(&shared.config)),
        _ => None,
    };
    if let Some(cookie) = cookie {
        let headers = response.headers_mut();
        headers.append(header::SET_COOKIE, cookie);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
