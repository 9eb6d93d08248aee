//! An HTTP harness for the suite and for apps' tests: a router of test routes behind a
//! real layer, and a [`Browser`] that keeps its cookies.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{header, Request, StatusCode};
use tower::ServiceExt as _;

use crate::{Session, SessionError, SessionLayer};

use super::{test_config, DynStore};

pub(crate) fn layer(store: DynStore) -> SessionLayer {
    SessionLayer::from_arc(store, test_config().build().expect("valid test config"))
}

/// Two notifications that let a test pause a handler between its load and its write.
#[derive(Default)]
pub struct Gate {
    /// Signalled by the handler once it has loaded the session.
    pub loaded: tokio::sync::Notify,
    /// Signalled by the test to let the handler write.
    pub proceed: tokio::sync::Notify,
}

/// The routes the suite drives. Every handler uses only the public [`Session`] API.
pub fn test_router(layer: SessionLayer, gate: Arc<Gate>) -> Router {
    async fn untouched() -> &'static str {
        "ok"
    }
    async fn append(
        s: Session,
        Path((k, v)): Path<(String, String)>,
    ) -> Result<String, SessionError> {
        let list = s
            .update(&k, |list: Option<Vec<String>>| {
                let mut list = list.unwrap_or_default();
                list.push(v.clone());
                list
            })
            .await?;
        Ok(list.len().to_string())
    }
    async fn degraded(s: Session) -> Result<String, SessionError> {
        let user = s.user().await?;
        Ok(format!("{user:?} {}", s.is_degraded().await))
    }
    async fn show(
        s: Session,
        Path(k): Path<String>,
    ) -> Result<Json<serde_json::Value>, SessionError> {
        Ok(Json(
            s.get::<serde_json::Value>(&k).await?.unwrap_or_default(),
        ))
    }
    async fn put(
        s: Session,
        Path(k): Path<String>,
        Json(v): Json<serde_json::Value>,
    ) -> Result<&'static str, SessionError> {
        s.insert(&k, v).await?;
        Ok("ok")
    }
    async fn incr(s: Session, Path(k): Path<String>) -> Result<String, SessionError> {
        Ok(s.increment(&k, 1).await?.to_string())
    }
    async fn login(s: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
        s.cycle_id().await?;
        s.set_user(&user).await?;
        s.insert("login", true).await?;
        Ok("ok")
    }
    async fn logout(s: Session) -> &'static str {
        s.destroy().await;
        "ok"
    }
    async fn slow_put(
        s: Session,
        Extension(gate): Extension<Arc<Gate>>,
        Path(k): Path<String>,
    ) -> Result<&'static str, SessionError> {
        let _ = s.get::<serde_json::Value>(&k).await?;
        gate.loaded.notify_one();
        gate.proceed.notified().await;
        s.insert(&k, "late").await?;
        Ok("ok")
    }
    async fn slow_incr(
        s: Session,
        Extension(gate): Extension<Arc<Gate>>,
        Path(k): Path<String>,
    ) -> Result<String, SessionError> {
        gate.loaded.notify_one();
        gate.proceed.notified().await;
        Ok(s.increment(&k, 1).await?.to_string())
    }
    async fn flash(s: Session, Path(m): Path<String>) -> Result<&'static str, SessionError> {
        s.flash(m).await?;
        Ok("ok")
    }
    async fn flashes(s: Session) -> Result<Json<Vec<String>>, SessionError> {
        Ok(Json(s.take_flashes().await?))
    }
    async fn mine(s: Session) -> Result<Json<Vec<crate::SessionInfo>>, SessionError> {
        Ok(Json(s.user_sessions().await?))
    }
    async fn store_key(s: Session) -> String {
        s.key().await.map(|k| k.to_string()).unwrap_or_default()
    }
    async fn count(s: Session, Path(k): Path<String>) -> Result<String, SessionError> {
        Ok(s.get::<i64>(&k)
            .await?
            .map_or_else(|| "none".to_owned(), |n| n.to_string()))
    }
    async fn others(s: Session) -> Result<String, SessionError> {
        Ok(s.revoke_other_sessions().await?.to_string())
    }
    async fn cycle(s: Session) -> Result<&'static str, SessionError> {
        s.cycle_id().await?;
        Ok("ok")
    }
    async fn expiry(s: Session, Path(secs): Path<u64>) -> Result<&'static str, SessionError> {
        let idle = std::time::Duration::from_secs(secs);
        s.set_expiry(crate::Expiry::new(idle, idle * 2)).await?;
        Ok("ok")
    }
    async fn whoami(s: Session) -> Result<Json<Option<String>>, SessionError> {
        Ok(Json(s.user().await?))
    }
    async fn me(crate::RequireUser(user): crate::RequireUser) -> String {
        user
    }
    async fn ended(s: Session) -> Result<Json<Option<&'static str>>, SessionError> {
        Ok(Json(s.ended().await?.map(|r| r.as_str())))
    }
    /// A logout after reading the session (as a form's CSRF check does).
    async fn read_then_logout(s: Session) -> Result<&'static str, SessionError> {
        let _ = s.user().await?;
        s.destroy().await;
        Ok("ok")
    }
    /// A logout that goes on using the session (as a page that flashes "logged out" does).
    async fn logout_then_read(s: Session) -> Result<Json<Option<String>>, SessionError> {
        s.destroy().await;
        Ok(Json(s.user().await?))
    }
    Router::new()
        .route("/untouched", get(untouched))
        .route("/show/{k}", get(show))
        .route("/put/{k}", post(put))
        .route("/incr/{k}", post(incr))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/slow-put/{k}", post(slow_put))
        .route("/slow-incr/{k}", post(slow_incr))
        .route("/flash/{m}", post(flash))
        .route("/flashes", get(flashes))
        .route("/mine", get(mine))
        .route("/key", get(store_key))
        .route("/others", post(others))
        .route("/count/{k}", get(count))
        .route("/cycle", post(cycle))
        .route("/whoami", get(whoami))
        .route("/logout-then-read", post(logout_then_read))
        .route("/read-then-logout", post(read_then_logout))
        .route("/ended", get(ended))
        .route("/me", get(me))
        .route("/expiry/{secs}", post(expiry))
        .route("/degraded", get(degraded))
        .route("/append/{k}/{v}", post(append))
        .layer(Extension(gate))
        .layer(layer)
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Every `Set-Cookie` header.
    pub set_cookies: Vec<String>,
    /// The body as text.
    pub body: String,
    /// All headers.
    pub headers: http::HeaderMap,
}

/// A cookie-keeping client for a router (one "browser").
#[derive(Clone)]
pub struct Browser {
    router: Router,
    /// The `name=value` cookie pair it sends, if any.
    pub cookie: Option<String>,
}

impl Browser {
    /// A browser with no cookie.
    #[must_use]
    pub fn new(router: Router) -> Self {
        Self {
            router,
            cookie: None,
        }
    }

    /// Sends a request; keeps whatever cookie the response sets or removes.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> Reply {
        let reply = self.send_raw(method, path, json, self.cookie.clone()).await;
        self.keep_cookie(&reply);
        reply
    }

    /// Sends a request with a body of any content type (forms, malformed JSON, …); keeps
    /// the cookie like [`Browser::send`].
    pub async fn send_body(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<String>,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(cookie) = &self.cookie {
            builder = builder.header(header::COOKIE, cookie);
        }
        let reply = self
            .request(
                builder
                    .body(Body::from(body.into()))
                    .expect("valid test request"),
            )
            .await;
        self.keep_cookie(&reply);
        reply
    }

    /// Applies the response's `Set-Cookie` headers to the cookies it sends, by name (a jar:
    /// the session cookie and the fallback ticket live side by side).
    fn keep_cookie(&mut self, reply: &Reply) {
        let mut jar: Vec<(String, String)> = self
            .cookie
            .as_deref()
            .unwrap_or_default()
            .split("; ")
            .filter_map(|pair| pair.split_once('='))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        for set in &reply.set_cookies {
            let pair = set.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            jar.retain(|(n, _)| n != name);
            if !set.contains("Max-Age=0") {
                jar.push((name.to_owned(), value.to_owned()));
            }
        }
        self.cookie = (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
    }

    /// Sends a request with an explicit `Cookie` header; changes nothing in the browser.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
        cookie: Option<String>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            builder = builder.header(header::COOKIE, cookie);
        }
        let body = match json {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.request(builder.body(body).expect("valid test request"))
            .await
    }

    /// Sends a prepared request as is.
    pub async fn request(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let set_cookies = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .collect();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        Reply {
            status,
            set_cookies,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            headers,
        }
    }
}

pub(crate) fn browser(store: DynStore) -> Browser {
    Browser::new(test_router(layer(store), Arc::default()))
}

pub(crate) async fn concurrently<F, Fut>(n: usize, f: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("bounded")
                .expect("task"),
        );
    }
    out
}
