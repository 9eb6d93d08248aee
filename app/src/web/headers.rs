//! Security headers on every response: what the browser may load, frame, sniff and send on.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The `Clear-Site-Data` header (not among `http`'s constants).
pub const CLEAR_SITE_DATA: &str = "clear-site-data";

/// Scripts, styles, images and forms only from this origin; never framed (clickjacking).
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; \
                   base-uri 'none'; object-src 'none'";
/// A year, the length HSTS preload lists ask for.
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// How the app protects its pages beyond the session layer.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Other origins allowed to send unsafe requests (the CSRF guard's allow list).
    pub trusted_origins: Vec<String>,
    /// Send `Strict-Transport-Security` (production: the app is only ever reached over TLS).
    pub hsts: bool,
}

/// Adds the security headers; HTML responses also get the Content-Security-Policy.
pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if state.security.hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}
