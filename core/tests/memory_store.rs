//! The behavioural suite against the in-memory store.

async fn make_store() -> cloakroom::MemoryStore {
    cloakroom::MemoryStore::default()
}

cloakroom::store_suite!(make_store);

/// The memory store forgets an expired session on the load that finds it, but keeps which
/// deadline passed for a signed-in one.
#[tokio::test]
async fn an_expiry_says_which_deadline_passed() {
    cloakroom::testing::an_expiry_says_which_deadline_passed(std::sync::Arc::new(
        make_store().await,
    ))
    .await;
}
