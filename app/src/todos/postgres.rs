//! Todos on PostgreSQL, beside the sessions: one row per todo in `<schema>.todos`, keyed by
//! user and a per-user id. Every change is one statement, so concurrent requests from any
//! app instance never lose a todo.

use async_trait::async_trait;
use cloakroom::{now_millis, StoreError};
use cloakroom_postgres::deadpool_postgres::Pool;
use cloakroom_postgres::tokio_postgres::error::SqlState;

use super::{Todo, TodoError, TodoStore, MAX_TODOS};

/// Todo lists in PostgreSQL, sharing the session store's pool.
pub struct PostgresTodos {
    pool: Pool,
    list: String,
    add: String,
    complete: String,
    delete: String,
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> TodoError {
    TodoError::Store(StoreError::unavailable(e))
}

impl PostgresTodos {
    /// Creates the table in `schema` if missing (the session store has checked the name).
    ///
    /// # Errors
    /// [`TodoError::Store`] if the server fails.
    pub async fn new(pool: Pool, schema: &str) -> Result<Self, TodoError> {
        let client = pool.get().await.map_err(failed)?;
        client
            .batch_execute(&format!(
                "SET LOCAL client_min_messages = warning;
                 CREATE TABLE IF NOT EXISTS {schema}.todos (
                     user_id text NOT NULL,
                     id bigint NOT NULL,
                     title text NOT NULL,
                     done boolean NOT NULL DEFAULT false,
                     created bigint NOT NULL,
                     PRIMARY KEY (user_id, id)
                 )"
            ))
            .await
            .map_err(failed)?;
        Ok(Self {
            list: format!(
                "SELECT id, title, done, created FROM {schema}.todos WHERE user_id = $1 ORDER BY id"
            ),
            // The next id and the limit in one statement; two adds racing for one id meet
            // the primary key, and the loser retries.
            add: format!(
                "INSERT INTO {schema}.todos (user_id, id, title, created)
                 SELECT $1, COALESCE(max(id), 0) + 1, $2, $3 FROM {schema}.todos
                 WHERE user_id = $1 HAVING count(*) < $4
                 RETURNING id"
            ),
            complete: format!(
                "UPDATE {schema}.todos SET done = true WHERE user_id = $1 AND id = $2"
            ),
            delete: format!("DELETE FROM {schema}.todos WHERE user_id = $1 AND id = $2"),
            pool,
        })
    }
}

fn id(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl TodoStore for PostgresTodos {
    async fn list(&self, user: &str) -> Result<Vec<Todo>, TodoError> {
        let client = self.pool.get().await.map_err(failed)?;
        let rows = client
            .query(self.list.as_str(), &[&user])
            .await
            .map_err(failed)?;
        rows.iter()
            .map(|row| {
                let (id, created): (i64, i64) = (row.try_get(0)?, row.try_get(3)?);
                Ok(Todo {
                    id: u64::try_from(id).unwrap_or(0),
                    title: row.try_get(1)?,
                    done: row.try_get(2)?,
                    created: u64::try_from(created).unwrap_or(0),
                })
            })
            .collect::<Result<_, cloakroom_postgres::tokio_postgres::Error>>()
            .map_err(failed)
    }

    async fn add(&self, user: &str, title: &str) -> Result<Todo, TodoError> {
        let client = self.pool.get().await.map_err(failed)?;
        let created = now_millis();
        let (created_i, limit) = (id(created), id(MAX_TODOS as u64));
        // Bounded: each retry means another add to the same list just won.
        for _ in 0..20 {
            match client
                .query_opt(self.add.as_str(), &[&user, &title, &created_i, &limit])
                .await
            {
                Ok(Some(row)) => {
                    let n: i64 = row.try_get(0).map_err(failed)?;
                    return Ok(Todo {
                        id: u64::try_from(n).unwrap_or(0),
                        title: title.to_owned(),
                        done: false,
                        created,
                    });
                }
                Ok(None) => return Err(TodoError::Full),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(TodoError::Store(StoreError::Overloaded))
    }

    async fn complete(&self, user: &str, todo: u64) -> Result<bool, TodoError> {
        let client = self.pool.get().await.map_err(failed)?;
        let n = client
            .execute(self.complete.as_str(), &[&user, &id(todo)])
            .await
            .map_err(failed)?;
        Ok(n == 1)
    }

    async fn delete(&self, user: &str, todo: u64) -> Result<bool, TodoError> {
        let client = self.pool.get().await.map_err(failed)?;
        let n = client
            .execute(self.delete.as_str(), &[&user, &id(todo)])
            .await
            .map_err(failed)?;
        Ok(n == 1)
    }
}
