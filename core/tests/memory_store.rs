//! The behavioural suite against the in-memory store.

async fn make_store() -> cloakroom::MemoryStore {
    cloakroom::MemoryStore::default()
}

cloakroom::store_suite!(make_store);
