//! The layer in front of a plain tower service over `http` types (no axum router), with a
//! response body that is not axum's: the session is in the request's extensions.

use std::convert::Infallible;

use cloakroom::testing::test_config;
use cloakroom::{MemoryStore, Session, SessionLayer};
use http::{header, Request, Response, StatusCode};
use tower::{service_fn, ServiceBuilder, ServiceExt};

async fn visits(request: Request<String>) -> Result<Response<String>, Infallible> {
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body("no session layer".to_owned())
            .unwrap());
    };
    let body = match session.increment("visits", 1).await {
        Ok(n) => format!("visit {n}"),
        Err(e) => e.to_string(),
    };
    Ok(Response::new(body))
}

#[tokio::test]
async fn a_plain_tower_service_with_its_own_body_type_gets_sessions() {
    let layer = SessionLayer::new(MemoryStore::default(), test_config().build().unwrap());
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(visits));
    let mut cookie = None;
    for expected in 1..=3 {
        let mut request = Request::builder().uri("/");
        if let Some(c) = &cookie {
            request = request.header(header::COOKIE, c);
        }
        let response = service
            .clone()
            .oneshot(request.body(String::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        if let Some(set) = response.headers().get(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            cookie = Some(pair);
        }
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(body, format!("visit {expected}").as_bytes());
    }
}
