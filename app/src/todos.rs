//! Each user's todo list: kept in the same backend as the sessions but outside them, so it
//! survives logout and every app instance sees it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use cloakroom::{now_millis, Millis, StoreError};
use serde::{Deserialize, Serialize};

/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most todos one user may keep.
pub const MAX_TODOS: usize = 500;

/// One todo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Todo {
    /// Per-user id.
    pub id: u64,
    /// What to do (validated, unescaped: escape when rendering).
    pub title: String,
    /// Whether it is done.
    pub done: bool,
    /// Creation time (Unix ms).
    pub created: Millis,
}

/// Why a todo was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TitleError {
    /// Blank title.
    #[error("title required")]
    Empty,
    /// Over [`MAX_TITLE_CHARS`].
    #[error("title too long (at most {MAX_TITLE_CHARS} characters)")]
    TooLong,
    /// Control characters.
    #[error("title contains control characters")]
    Control,
}

/// Validates and normalises a title (trimmed).
///
/// # Errors
/// [`TitleError`] for a blank, over-long, or control-character title.
pub fn validate_title(title: &str) -> Result<String, TitleError> {
    let title = title.trim();
    if title.is_empty() {
        return Err(TitleError::Empty);
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(TitleError::TooLong);
    }
    if title.chars().any(char::is_control) {
        return Err(TitleError::Control);
    }
    Ok(title.to_owned())
}

/// What a todo operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TodoError {
    /// The user has [`MAX_TODOS`] already.
    #[error("too many todos (at most {MAX_TODOS})")]
    Full,
    /// The backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Storage for todo lists.
#[async_trait]
pub trait TodoStore: Send + Sync + 'static {
    /// The user's todos, oldest first.
    async fn list(&self, user: &str) -> Result<Vec<Todo>, TodoError>;
    /// Adds a todo with an already validated title.
    async fn add(&self, user: &str, title: &str) -> Result<Todo, TodoError>;
    /// Marks a todo done; false if there is no such todo.
    async fn complete(&self, user: &str, id: u64) -> Result<bool, TodoError>;
    /// Deletes a todo; false if there is no such todo.
    async fn delete(&self, user: &str, id: u64) -> Result<bool, TodoError>;
}

/// A todo store behind the session layer's timeout and circuit breaker: todo lists live in
/// the same backend as the sessions, so they fail (fast) together.
pub struct GuardedTodos {
    inner: std::sync::Arc<dyn TodoStore>,
    layer: cloakroom::SessionLayer,
}

impl GuardedTodos {
    /// Guards `inner` with `layer`'s timeout and breaker.
    #[must_use]
    pub fn new(inner: std::sync::Arc<dyn TodoStore>, layer: cloakroom::SessionLayer) -> Self {
        Self { inner, layer }
    }

    async fn run<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, TodoError>>,
    ) -> Result<T, TodoError> {
        // Only backend failures go through the breaker; a full list is the user's answer.
        let outcome = self
            .layer
            .guard(async {
                match call.await {
                    Err(TodoError::Store(e)) => Err(e),
                    other => Ok(other),
                }
            })
            .await;
        outcome?
    }
}

#[async_trait]
impl TodoStore for GuardedTodos {
    async fn list(&self, user: &str) -> Result<Vec<Todo>, TodoError> {
        self.run(self.inner.list(user)).await
    }
    async fn add(&self, user: &str, title: &str) -> Result<Todo, TodoError> {
        self.run(self.inner.add(user, title)).await
    }
    async fn complete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        self.run(self.inner.complete(user, id)).await
    }
    async fn delete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        self.run(self.inner.delete(user, id)).await
    }
}

/// Per user: the last id used and the todos by id.
type Lists = HashMap<String, (u64, BTreeMap<u64, Todo>)>;

/// Todos in memory (with the memory session store).
#[derive(Default)]
pub struct MemoryTodos {
    lists: Mutex<Lists>,
}

impl MemoryTodos {
    fn with<T>(&self, f: impl FnOnce(&mut Lists) -> T) -> T {
        let mut guard = self
            .lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

#[async_trait]
impl TodoStore for MemoryTodos {
    async fn list(&self, user: &str) -> Result<Vec<Todo>, TodoError> {
        Ok(self.with(|l| {
            l.get(user)
                .map(|(_, t)| t.values().cloned().collect())
                .unwrap_or_default()
        }))
    }
    async fn add(&self, user: &str, title: &str) -> Result<Todo, TodoError> {
        self.with(|l| {
            let (next, todos) = l.entry(user.to_owned()).or_default();
            if todos.len() >= MAX_TODOS {
                return Err(TodoError::Full);
            }
            *next += 1;
            let todo = Todo {
                id: *next,
                title: title.to_owned(),
                done: false,
                created: now_millis(),
            };
            todos.insert(todo.id, todo.clone());
            Ok(todo)
        })
    }
    async fn complete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        Ok(self.with(|l| {
            l.get_mut(user)
                .and_then(|(_, t)| t.get_mut(&id))
                .map(|t| t.done = true)
                .is_some()
        }))
    }
    async fn delete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        Ok(self.with(|l| l.get_mut(user).and_then(|(_, t)| t.remove(&id)).is_some()))
    }
}

pub mod postgres;
pub mod redis;

/// Todos in the embedded store's file, in tables of their own.
pub mod embedded {
    use super::{Todo, TodoError, TodoStore, MAX_TODOS};
    use async_trait::async_trait;
    use cloakroom::{now_millis, StoreError};
    use cloakroom_embedded::EmbeddedStore;
    use redb::{ReadableTable, TableDefinition};

    type Bytes = &'static [u8];
    /// (user length, user, id) → JSON todo.
    const TODOS: TableDefinition<Bytes, Bytes> = TableDefinition::new("todos");
    /// user → last id used.
    const TODO_IDS: TableDefinition<&str, u64> = TableDefinition::new("todo_ids");

    fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::unavailable(e)
    }

    fn prefix(user: &str) -> Vec<u8> {
        let mut out = u16::try_from(user.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(user.as_bytes());
        out
    }

    fn entry(user: &str, id: u64) -> Vec<u8> {
        let mut out = prefix(user);
        out.extend_from_slice(&id.to_be_bytes());
        out
    }

    fn bounds(user: &str) -> (Vec<u8>, Vec<u8>) {
        let start = prefix(user);
        let mut end = start.clone();
        end.extend_from_slice(&[0xff; 9]);
        (start, end)
    }

    /// Todos next to the sessions, in the embedded store's file.
    pub struct EmbeddedTodos {
        store: EmbeddedStore,
    }

    impl EmbeddedTodos {
        /// Todos in `store`'s file.
        #[must_use]
        pub fn new(store: EmbeddedStore) -> Self {
            Self { store }
        }
    }

    fn update(
        user: String,
        id: u64,
        f: fn(&mut Option<Todo>),
    ) -> impl FnOnce(&redb::WriteTransaction) -> Result<bool, StoreError> {
        move |txn| {
            let mut table = txn.open_table(TODOS).map_err(backend)?;
            let key = entry(&user, id);
            let mut todo: Option<Todo> = match table.get(key.as_slice()).map_err(backend)? {
                Some(v) => Some(
                    serde_json::from_slice(v.value())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ),
                None => return Ok(false),
            };
            f(&mut todo);
            match todo {
                Some(todo) => {
                    let bytes = serde_json::to_vec(&todo)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    table
                        .insert(key.as_slice(), bytes.as_slice())
                        .map_err(backend)?;
                }
                None => {
                    table.remove(key.as_slice()).map_err(backend)?;
                }
            }
            Ok(true)
        }
    }

    #[async_trait]
    impl TodoStore for EmbeddedTodos {
        async fn list(&self, user: &str) -> Result<Vec<Todo>, TodoError> {
            let (start, end) = bounds(user);
            Ok(self
                .store
                .read(move |txn| {
                    let table = match txn.open_table(TODOS) {
                        Ok(t) => t,
                        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                        Err(e) => return Err(backend(e)),
                    };
                    let mut out = Vec::new();
                    for row in table
                        .range(start.as_slice()..end.as_slice())
                        .map_err(backend)?
                    {
                        let (_, v) = row.map_err(backend)?;
                        out.push(
                            serde_json::from_slice(v.value())
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        );
                    }
                    Ok(out)
                })
                .await?)
        }

        async fn add(&self, user: &str, title: &str) -> Result<Todo, TodoError> {
            let (user, title) = (user.to_owned(), title.to_owned());
            let added = self
                .store
                .write(move |txn| {
                    let mut todos = txn.open_table(TODOS).map_err(backend)?;
                    let (start, end) = bounds(&user);
                    if todos
                        .range(start.as_slice()..end.as_slice())
                        .map_err(backend)?
                        .count()
                        >= MAX_TODOS
                    {
                        return Ok(None);
                    }
                    let mut ids = txn.open_table(TODO_IDS).map_err(backend)?;
                    let id = ids
                        .get(user.as_str())
                        .map_err(backend)?
                        .map_or(0, |v| v.value())
                        + 1;
                    let todo = Todo {
                        id,
                        title,
                        done: false,
                        created: now_millis(),
                    };
                    let bytes = serde_json::to_vec(&todo)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    ids.insert(user.as_str(), id).map_err(backend)?;
                    todos
                        .insert(entry(&user, id).as_slice(), bytes.as_slice())
                        .map_err(backend)?;
                    Ok(Some(todo))
                })
                .await?;
            added.ok_or(TodoError::Full)
        }

        async fn complete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
            Ok(self
                .store
                .write(update(user.to_owned(), id, |t| {
                    if let Some(t) = t {
                        t.done = true;
                    }
                }))
                .await?)
        }

        async fn delete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
            Ok(self
                .store
                .write(update(user.to_owned(), id, |t| *t = None))
                .await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_validated() {
        assert_eq!(validate_title("  buy milk "), Ok("buy milk".into()));
        assert_eq!(validate_title("   "), Err(TitleError::Empty));
        assert_eq!(validate_title(&"x".repeat(201)), Err(TitleError::TooLong));
        assert_eq!(validate_title("a\u{0}b"), Err(TitleError::Control));
        assert!(validate_title(&"é".repeat(200)).is_ok());
    }

    /// A todo backend that never answers.
    struct Hanging;

    #[async_trait]
    impl TodoStore for Hanging {
        async fn list(&self, _: &str) -> Result<Vec<Todo>, TodoError> {
            std::future::pending().await
        }
        async fn add(&self, _: &str, _: &str) -> Result<Todo, TodoError> {
            std::future::pending().await
        }
        async fn complete(&self, _: &str, _: u64) -> Result<bool, TodoError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str, _: u64) -> Result<bool, TodoError> {
            std::future::pending().await
        }
    }

    /// Todo calls go through the sessions' timeout and breaker: a hanging backend answers
    /// Timeout within the store timeout, then CircuitOpen at once.
    #[tokio::test]
    async fn todo_calls_share_the_session_timeout_and_breaker() {
        let config = cloakroom::testing::test_config()
            .with_store_timeout(std::time::Duration::from_millis(30))
            .with_breaker_threshold(2)
            .build()
            .unwrap();
        let layer = cloakroom::SessionLayer::new(cloakroom::MemoryStore::default(), config);
        let todos = GuardedTodos::new(std::sync::Arc::new(Hanging), layer);
        for _ in 0..2 {
            assert!(matches!(
                todos.list("alice").await,
                Err(TodoError::Store(StoreError::Timeout(_)))
            ));
        }
        // CircuitOpen: refused without calling the backend, so without waiting for it.
        assert!(matches!(
            todos.add("alice", "x").await,
            Err(TodoError::Store(StoreError::CircuitOpen))
        ));
    }
}
