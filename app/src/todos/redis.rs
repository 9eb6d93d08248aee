//! Todos on Redis, beside the sessions: one hash per user (`cloakroom:todos:<user>`) holding
//! `next` (the last id), `<id>` (the todo as JSON) and `<id>:done`. Every change is one
//! command or one script, so concurrent requests from any app instance never lose a todo.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use cloakroom::{now_millis, StoreError};
use cloakroom_redis::RedisConnection;
use redis::Script;

use super::{Todo, TodoError, TodoStore, MAX_TODOS};

/// Adds a todo unless the list is full. ARGV: limit, JSON. Returns the id, or -1 when full.
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f ~= 'next' and not string.find(f, ':', 1, true) then n = n + 1 end
end
if n >= tonumber(ARGV[1]) then return -1 end
local id = redis.call('HINCRBY', KEYS[1], 'next', 1)
redis.call('HSET', KEYS[1], tostring(id), ARGV[2])
return id
",
    )
});

/// Marks a todo done only if it still exists (a racing delete wins). ARGV: id.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':done', '1')
return 1
",
    )
});

/// Todo lists in Redis, sharing the session store's connection.
pub struct RedisTodos {
    conn: RedisConnection,
}

impl RedisTodos {
    /// Todos over `conn`.
    #[must_use]
    pub fn new(conn: RedisConnection) -> Self {
        Self { conn }
    }

    fn key(user: &str) -> String {
        format!("cloakroom:todos:{user}")
    }
}

fn failed(e: redis::RedisError) -> TodoError {
    TodoError::Store(StoreError::unavailable(e))
}

fn corrupt(what: &str) -> TodoError {
    TodoError::Store(StoreError::Corrupt(format!("todo list: {what}")))
}

#[async_trait]
impl TodoStore for RedisTodos {
    async fn list(&self, user: &str) -> Result<Vec<Todo>, TodoError> {
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(Self::key(user))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        let mut todos = Vec::new();
        for (field, json) in &fields {
            let Ok(id) = field.parse::<u64>() else {
                continue; // `next` and the `:done` flags
            };
            let mut todo: Todo = serde_json::from_str(json).map_err(|_| corrupt("bad JSON"))?;
            todo.id = id;
            todo.done = fields.contains_key(&format!("{id}:done"));
            todos.push(todo);
        }
        todos.sort_by_key(|t| t.id);
        Ok(todos)
    }

    async fn add(&self, user: &str, title: &str) -> Result<Todo, TodoError> {
        let mut todo = Todo {
            id: 0,
            title: title.to_owned(),
            done: false,
            created: now_millis(),
        };
        let json = serde_json::to_string(&todo).map_err(|_| corrupt("unencodable"))?;
        let id: i64 = ADD
            .key(Self::key(user))
            .arg(MAX_TODOS)
            .arg(json)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        todo.id = u64::try_from(id).map_err(|_| TodoError::Full)?;
        Ok(todo)
    }

    async fn complete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        let done: i64 = COMPLETE
            .key(Self::key(user))
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        Ok(done == 1)
    }

    async fn delete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        let removed: i64 = redis::cmd("HDEL")
            .arg(Self::key(user))
            .arg(id)
            .arg(format!("{id}:done"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        Ok(removed > 0)
    }
}
