//! The behavioural suite against the minimal store of `examples/minimal_store.rs`: the five
//! essential methods pass it, and the optional per-user index and figures are reported as
//! unsupported rather than answered wrongly.

#[allow(dead_code)]
#[path = "../examples/minimal_store.rs"]
mod minimal_store;

async fn make_store() -> minimal_store::MinimalStore {
    minimal_store::MinimalStore::default()
}

cloakroom::store_suite!(make_store);
