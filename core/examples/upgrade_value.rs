//! A deploy that changes the type of a session field without losing what sessions hold: the
//! cart was a list of names (`CartV1`), it is now items with quantities (`Cart`). Sessions
//! that still hold the old shape are read through `Session::get_upgraded`, which upgrades
//! them and writes the new shape back; a plain `get` of the new type would read such a field
//! as absent (logged and counted), never fail the request.
//!
//! `cargo run -p cloakroom --example upgrade_value`, then POST /old/milk (the old code's
//! write), GET /cart (the new code's read).

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{KeyRing, MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
use serde::{Deserialize, Serialize};

/// What the old code stored.
#[derive(Serialize, Deserialize)]
pub struct CartV1(pub Vec<String>);

/// What the new code stores.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Cart {
    /// Item names and quantities.
    pub items: Vec<(String, u32)>,
}

impl From<CartV1> for Cart {
    fn from(old: CartV1) -> Self {
        Cart {
            items: old.0.into_iter().map(|name| (name, 1)).collect(),
        }
    }
}

/// The old code's write (to make a session that holds the old shape).
async fn old_write(
    session: Session,
    Path(item): Path<String>,
) -> Result<&'static str, SessionError> {
    session.insert("cart", CartV1(vec![item])).await?;
    Ok("stored the old shape")
}

/// The new code's read: the old shape upgraded, and stored in the new shape.
async fn cart(session: Session) -> Result<Json<Option<Cart>>, SessionError> {
    Ok(Json(session.get_upgraded::<Cart, CartV1>("cart").await?))
}

/// The app (a function, so the example's test drives the same router).
pub fn app() -> Router {
    let keys = KeyRing::generate().expect("OS randomness");
    let config = SessionConfig::builder(keys).build().expect("valid config");
    Router::new()
        .route("/old/{item}", post(old_write))
        .route("/cart", get(cart))
        .layer(SessionLayer::new(MemoryStore::default(), config))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app()).await
}
