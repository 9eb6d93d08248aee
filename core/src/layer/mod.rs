//! The tower `Layer` and `Service` that give every request a [`Session`] and commit it;
//! `shared` holds what the layer shares with its sessions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::response::Response;
use http::{header, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

use crate::config::SessionConfig;
use crate::cookie;
use crate::cookie::TicketCookie;
use crate::error::{ended_response, error_response, wants_html, ErrorMarker};
use crate::guard::Guarded;
use crate::guessing::Detector;
use crate::metrics::SessionMetrics;
use crate::session::state::{Committed, CookieOut, TicketOut};
use crate::session::Session;
use crate::store::{SessionStore, StoreError, StoreStats};
use crate::ticket::Ended;

pub(crate) mod shared;
use shared::{Presented, Shared};

/// Sessions and users remembered as ended, for refusing their fallback tickets (about 100
/// bytes each); past this, the oldest are evicted and tickets issued before them refused.
const ENDED_CAPACITY: usize = 100_000;

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

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.shared.config)
            .field("breaker_open", &self.shared.store.is_open())
            .finish_non_exhaustive()
    }
}

/// What the request's cookies said, before any store call.
enum Arrival {
    Session(Session),
    /// The client keeps sending invalid cookies and the policy throttles it.
    Throttled,
}

impl SessionLayer {
    /// A layer over `store` with `config`.
    pub fn new(store: impl SessionStore, config: SessionConfig) -> Self {
        Self::from_arc(Arc::new(store), config)
    }

    /// A layer over a store that is already shared.
    pub fn from_arc(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        let fallback_lifetime = Shared::millis(config.fallback.lifetime);
        let store = Guarded::new(
            store,
            config.store_timeout,
            config.breaker_threshold,
            config.breaker_cooldown,
        );
        let creates = tokio::sync::Semaphore::new(config.max_pending_creates);
        Self {
            shared: Arc::new(Shared {
                config,
                store,
                creates,
                guesses: Detector::default(),
                ended: Ended::new(ENDED_CAPACITY, fallback_lifetime),
                no_user_index: std::sync::atomic::AtomicBool::new(false),
                events: crate::events::Events::default(),
            }),
        }
    }
    /// Hands every lifecycle event (created, logged in, ID cycled, renewed, ended with its
    /// reason) to `handler`, on a thread of its own through a bounded queue: a slow handler
    /// never slows a request; past [`crate::events::EVENT_QUEUE`] waiting events, new ones
    /// are dropped and counted. Events name the user and the session's fingerprint, never
    /// its ID. A second call replaces the handler.
    ///
    /// ```
    /// use cloakroom::events::SessionEvent;
    /// # let layer = cloakroom::SessionLayer::new(cloakroom::MemoryStore::default(),
    /// #     cloakroom::SessionConfig::builder(cloakroom::KeyRing::generate().unwrap()).build().unwrap());
    /// let layer = layer.on_event(|event| {
    ///     if let SessionEvent::LoggedIn { user, session } = event {
    ///         println!("audit: {user} logged in ({session})");
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn on_event(self, handler: impl Fn(crate::events::SessionEvent) + Send + 'static) -> Self {
        self.shared.events.set(handler);
        self
    }

    /// The layer's counters.
    #[must_use]
    pub fn metrics(&self) -> Arc<SessionMetrics> {
        self.shared.store.metrics.clone()
    }

    /// Whether the circuit breaker is open now (store calls fail at once).
    #[must_use]
    pub fn breaker_open(&self) -> bool {
        self.shared.store.is_open()
    }

    /// Registers the layer's metrics, the breaker state among them, into an app's
    /// `registry` (names prefixed `cloakroom_`; see [`SessionMetrics::register`]). Nothing
    /// reaches the store at a scrape.
    ///
    /// ```
    /// use cloakroom::{KeyRing, MemoryStore, SessionConfig, SessionLayer};
    /// use cloakroom::prometheus_client::registry::Registry;
    ///
    /// let config = SessionConfig::builder(KeyRing::generate()?).build()?;
    /// let layer = SessionLayer::new(MemoryStore::default(), config);
    /// let mut registry = Registry::default();
    /// layer.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// assert!(text.contains("cloakroom_breaker_open 0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.register_metrics_with(registry, crate::Gauges::new);
    }

    /// As [`SessionLayer::register_metrics`], with the point-in-time figures `gauges` knows at
    /// each scrape (live sessions, the read cache's hits): keep it cheap, it runs in the
    /// scrape.
    pub fn register_metrics_with(
        &self,
        registry: &mut prometheus_client::registry::Registry,
        gauges: impl Fn() -> crate::Gauges + Send + Sync + 'static,
    ) {
        let shared = self.shared.clone();
        self.metrics().register(registry, move || {
            gauges().with_breaker_open(shared.store.is_open())
        });
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// The store, unguarded (for operator tools).
    #[must_use]
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.shared.store.inner().clone()
    }

    /// Runs `call` (a call to data the app keeps beside its sessions, in the same backend)
    /// under the session store's timeout and circuit breaker: when the backend is down, the
    /// app's own data fails as fast as its sessions do, and its failures count alike.
    ///
    /// # Errors
    /// The call's error, [`StoreError::Timeout`], or [`StoreError::CircuitOpen`].
    pub async fn guard<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.shared.store.call(call).await
    }

    /// Asks the store whether it answers, through the timeout and breaker (for `/readyz`):
    /// its figures, or, for a store without them (or one migrating), zero sessions once it
    /// answers a ping.
    ///
    /// # Errors
    /// The store's error, [`StoreError::Timeout`], or [`StoreError::CircuitOpen`].
    pub async fn ready(&self) -> Result<StoreStats, StoreError> {
        if self.shared.store.is_open() {
            return Err(StoreError::CircuitOpen);
        }
        let store = &self.shared.store;
        match store.stats().await {
            // A store without figures (or one migrating) is ready when it answers.
            Err(StoreError::Unsupported(_)) => store.ping().await.map(|()| StoreStats {
                sessions: 0,
                bytes: None,
            }),
            answer => answer,
        }
    }

    /// The session a request would get, without running a service (for tests and tools).
    #[must_use]
    pub fn session_for(&self, headers: &http::HeaderMap) -> Session {
        match self.arrive(headers, None) {
            Arrival::Session(session) => session,
            Arrival::Throttled => Session::new(
                self.shared.clone(),
                Presented::Nothing,
                None,
                TicketCookie::default(),
                None,
            ),
        }
    }

    /// What the request's cookies name. Verified now only when a client may have to be
    /// throttled before the handler runs; otherwise when the handler first uses the session,
    /// so that a route that never does pays for no HMAC.
    fn arrive(&self, headers: &http::HeaderMap, peer: Option<std::net::IpAddr>) -> Arrival {
        let config = &self.shared.config;
        let found = cookie::find(headers, &config.cookie_name);
        let client = config.guessing.client(peer, headers);
        let bound = config.binding.fingerprint(headers, client);
        let presented = if found.values.is_empty() && found.malformed == 0 {
            Presented::Nothing
        } else if config.guessing.throttles() {
            let (cookie, throttle) = self.shared.verify(&found, client);
            if throttle {
                return Arrival::Throttled;
            }
            Presented::Verified(cookie)
        } else {
            Presented::Unverified(found, client)
        };
        let ticket = TicketCookie::from_request(headers, config);
        let foreign = if config.imports.0.is_empty() {
            None
        } else {
            crate::import::presented(&config.imports, headers)
        };
        Arrival::Session(Session::new(
            self.shared.clone(),
            presented,
            bound,
            ticket,
            foreign,
        ))
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
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    layer: SessionLayer,
}

/// Any tower service over `http` types, with any response body: the body is passed through
/// untouched (boxed into axum-core's `Body`, which axum's own responses already are), and
/// the layer adds only headers, or answers alone with a small error response.
impl<S, B, ResBody> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum_core::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let html = wants_html(request.headers());
        let peer = peer_address(&request);
        let session = match self.layer.arrive(request.headers(), peer) {
            Arrival::Session(session) => session,
            Arrival::Throttled => {
                let mut response = error_response(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "too many invalid session cookies",
                    html,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                return Box::pin(async move { Ok(response) });
            }
        };
        request.extensions_mut().insert(session.clone());
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.layer.shared.clone();
        // One span per request; the session's fingerprint is filled in at the commit, once
        // the cookie has been verified (never the ID or the cookie itself).
        let span = tracing::info_span!("session", session = tracing::field::Empty);
        if span.is_disabled() {
            // Nobody listens: no span to enter at every poll of the whole request.
            return Box::pin(async move {
                let response = inner.call(request).await?.map(axum_core::body::Body::new);
                Ok(finish(&shared, &session, response, html).await)
            });
        }
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = inner.call(request).await?.map(axum_core::body::Body::new);
                let response = finish(&shared, &session, response, html).await;
                if let Some(key) = session.current_key().await {
                    recorded.record("session", tracing::field::display(key.fingerprint()));
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The client's address: axum's `ConnectInfo` (feature `axum`, with
/// `into_make_service_with_connect_info`), else a `SocketAddr` request extension that a
/// plain hyper or tower server put there.
fn peer_address<B>(request: &Request<B>) -> Option<std::net::IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    request
        .extensions()
        .get::<std::net::SocketAddr>()
        .map(std::net::SocketAddr::ip)
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
            response = ended_response(marker.status, marker.message, marker.ended, true);
        }
    }
    if response.status().is_server_error() && !shared.config.commit_on_server_error {
        session.discard().await;
    }
    let committed = match session.commit().await {
        Ok(committed) => committed,
        Err(error) => {
            // An unacknowledged write must not look like a success.
            tracing::warn!(%error, "session commit failed");
            return error_response(error.status(), error.public_message(), html);
        }
    };
    let Committed {
        ticket,
        cookie: action,
        value,
        max_age,
        touched,
    } = committed;
    let config = &shared.config;
    let cookie = match (action, value) {
        (CookieOut::Set, Some(value)) => Some(cookie::set(config, &value, max_age)),
        (CookieOut::Remove, _) => Some(cookie::removal(config)),
        _ => None,
    };
    let ticket = match ticket {
        TicketOut::Keep => None,
        TicketOut::Set(value) => Some(TicketCookie::issue(config, &value)),
        TicketOut::Remove => Some(TicketCookie::remove(config)),
    };
    let headers = response.headers_mut();
    if let Some(cookie) = &cookie {
        headers.append(header::SET_COOKIE, cookie.clone());
    }
    if let Some(ticket) = ticket {
        headers.append(header::SET_COOKIE, ticket);
    }
    // A response that depends on the session must not be cached, nor served to another
    // browser by a shared cache.
    if touched || cookie.is_some() {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
        if shared.config.cache_control || cookie.is_some() {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    response
}
