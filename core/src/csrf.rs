//! Cross-site request forgery defence, in two parts that every app gets from this crate:
//!
//! - [`CsrfLayer`] refuses unsafe requests (anything but `GET`, `HEAD`, `OPTIONS`, `TRACE`)
//!   that a browser says come from another site: `Sec-Fetch-Site: cross-site`, or (when the
//!   browser does not say `same-origin`) an `Origin` that is neither the request's own host
//!   nor a trusted origin. This covers routes without a body (logout, counters) that
//!   `SameSite=Lax` alone leaves to the browser. Requests with neither header (old browsers,
//!   non-browser clients) pass on to the synchronizer token and `SameSite`.
//! - The synchronizer token ([`crate::Session::csrf_token`]) for HTML forms, for browsers
//!   that send neither header. It is replaced at every change of user.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::response::Response;
use http::{header, HeaderMap, Method, Request, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{error_response, wants_html};
use crate::metrics::bump;

/// Refuses cross-site unsafe requests with `403`. Put it outside the [`crate::SessionLayer`]
/// so that a refused request costs no store call.
///
/// ```
/// use axum::{routing::post, Router};
/// use cloakroom::CsrfLayer;
/// let app: Router = Router::new()
///     .route("/logout", post(|| async { "bye" }))
///     .layer(CsrfLayer::new().with_trusted_origins(["https://admin.example.com"]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CsrfLayer {
    trusted: Arc<Vec<String>>,
    rejections: Option<Arc<crate::SessionMetrics>>,
}

impl CsrfLayer {
    /// Same-origin only: no other origin is trusted.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Other origins (`scheme://host[:port]`, as browsers send them) allowed to make unsafe
    /// requests, e.g. a separate admin front end.
    #[must_use]
    pub fn with_trusted_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted = Arc::new(
            origins
                .into_iter()
                .map(|o| o.into().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// Counts refusals in the session layer's metrics (`csrf_rejections`).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<crate::SessionMetrics>) -> Self {
        self.rejections = Some(metrics);
        self
    }

    /// Why a request is refused, if it is.
    fn refusal(&self, method: &Method, headers: &HeaderMap) -> Option<&'static str> {
        if matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            return None;
        }
        let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
        match text("sec-fetch-site") {
            Some("cross-site") => return Some("cross-site request refused"),
            // The browser itself vouches (a page cannot set Sec-Fetch-*), whatever a proxy did
            // to Host on the way: no need to compare the Origin.
            Some("same-origin" | "none") => return None,
            // same-site (a sibling subdomain) or an older browser: the Origin decides.
            _ => {}
        }
        let origin = text("origin")?.trim_end_matches('/').to_ascii_lowercase();
        let own = text("host").map(str::to_ascii_lowercase);
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        let same = authority.is_some() && authority == own.as_deref();
        if same || self.trusted.contains(&origin) {
            None
        } else {
            Some("request from another origin refused")
        }
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`CsrfLayer`].
#[derive(Debug, Clone)]
pub struct CsrfService<S> {
    inner: S,
    layer: CsrfLayer,
}

impl<S, B, ResBody> Service<Request<B>> for CsrfService<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum_core::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(why) = self.layer.refusal(request.method(), request.headers()) {
            if let Some(metrics) = &self.layer.rejections {
                bump(&metrics.csrf_rejections);
            }
            tracing::info!(
                method = %request.method(),
                origin = ?request.headers().get(header::ORIGIN),
                "{why}"
            );
            let html = wants_html(request.headers());
            let response = error_response(StatusCode::FORBIDDEN, why, html);
            return Box::pin(async move { Ok(response) });
        }
        let response = self.inner.call(request);
        Box::pin(async move { Ok(response.await?.map(axum_core::body::Body::new)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(method: Method, pairs: &[(&str, &str)], layer: &CsrfLayer) -> bool {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        layer.refusal(&method, &h).is_some()
    }

    #[test]
    fn cross_site_and_foreign_origins_are_refused_for_unsafe_methods_only() {
        let l = CsrfLayer::new().with_trusted_origins(["https://admin.example.com/"]);
        let host = ("host", "app.example.com");
        assert!(refused(
            Method::POST,
            &[host, ("sec-fetch-site", "cross-site")],
            &l
        ));
        assert!(!refused(
            Method::GET,
            &[host, ("sec-fetch-site", "cross-site")],
            &l
        ));
        assert!(refused(
            Method::POST,
            &[host, ("origin", "https://evil.example")],
            &l
        ));
        assert!(refused(Method::DELETE, &[host, ("origin", "null")], &l));
        assert!(refused(
            Method::POST,
            &[host, ("origin", "https://app.example.com.evil")],
            &l
        ));
        assert!(!refused(
            Method::POST,
            &[host, ("origin", "https://App.example.com")],
            &l
        ));
        assert!(!refused(
            Method::POST,
            &[host, ("origin", "https://admin.example.com")],
            &l
        ));
        assert!(!refused(
            Method::POST,
            &[host, ("sec-fetch-site", "same-origin")],
            &l
        ));
        // Behind a proxy that rewrites Host, the browser's own word still counts.
        let proxied = [
            ("host", "backend:8080"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://app.example.com"),
        ];
        assert!(!refused(Method::POST, &proxied, &l));
        // A sibling subdomain is same-site, not same-origin: its Origin is checked.
        let sibling = [
            host,
            ("sec-fetch-site", "same-site"),
            ("origin", "https://evil.example.com"),
        ];
        assert!(refused(Method::POST, &sibling, &l));
        // Neither header (old browsers, curl): left to the synchronizer token and SameSite.
        assert!(!refused(Method::POST, &[host], &l));
    }
}
