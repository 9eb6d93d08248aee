//! Transport: sending commands and scripts over the multiplexed link, what a dropped link or
//! a forgotten script means for each (resent, or reported as unknown), and durable writes
//! (`WAIT`).

use cloakroom::{Changes, StoreError};
use redis::{Cmd, ErrorKind, ServerErrorKind, Value};

use super::RedisStore;
use crate::link::RedisConnection;
use crate::scripts::{self, Lua};

impl RedisStore {
    pub(crate) async fn load_scripts(&self) -> Result<(), redis::RedisError> {
        if self.conn.is_cluster() {
            // One at a time: a lone SCRIPT LOAD goes to every node, a pipeline to one.
            for source in scripts::sources() {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(*source)
                    .query_async::<()>(&mut self.conn.clone())
                    .await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for source in scripts::sources() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(*source).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    pub(crate) fn failed(&self, error: redis::RedisError) -> StoreError {
        if error.is_timeout() {
            return StoreError::Timeout(self.response_timeout);
        }
        match error.code() {
            Some("WRONGTYPE") => {
                StoreError::Corrupt("a session key holds something other than a hash".into())
            }
            // A script that failed on one session's data (a generic ERR from a script, not a
            // server condition) says nothing about the server's health: it must not open the
            // breaker for everyone. Its text is not kept: it may quote the data.
            Some("ERR") if error.detail().is_some_and(|d| d.contains("script")) => {
                StoreError::Corrupt("a session script failed on this session's data".into())
            }
            _ => StoreError::unavailable(error),
        }
    }

    /// Sends `cmds` as one pipeline (one round trip); the first failed command fails the call.
    /// Sent once more on a fresh connection if the link dropped: only for commands that may
    /// run twice (reads, and writes that set rather than add).
    pub(crate) async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        self.run_each(cmds, Resend::IfDropped)
            .await?
            .into_iter()
            .collect()
    }

    /// Sends `cmds` as one pipeline and answers each command's outcome. Scripts the server has
    /// forgotten (after a restart) are loaded and just those commands sent again: they did not
    /// run the first time.
    pub(crate) async fn run_each(
        &self,
        cmds: Vec<Cmd>,
        resend: Resend,
    ) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let mut replies = self.send(&cmds, resend).await?;
        let forgotten: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(r, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            })
            .map(|(i, _)| i)
            .collect();
        if !forgotten.is_empty() {
            // A durable write's WAIT must come after the commands sent again, or it would
            // vouch for nothing.
            let mut forgotten = forgotten;
            let waits: Vec<usize> = forgotten
                .iter()
                .filter_map(|&i| (i + 1..cmds.len()).find(|&j| is_wait(&cmds[j])))
                .collect();
            forgotten.extend(waits);
            forgotten.sort_unstable();
            forgotten.dedup();
            self.load_scripts().await.map_err(|e| self.failed(e))?;
            let again = self
                .send(
                    &forgotten
                        .iter()
                        .map(|&i| cmds[i].clone())
                        .collect::<Vec<_>>(),
                    resend,
                )
                .await?;
            for (i, reply) in forgotten.into_iter().zip(again) {
                replies[i] = reply;
            }
        }
        Ok(replies
            .into_iter()
            .map(|r| r.map_err(|e| self.failed(e)))
            .collect())
    }

    pub(crate) async fn send(
        &self,
        cmds: &[Cmd],
        resend: Resend,
    ) -> Result<Vec<redis::RedisResult<Value>>, StoreError> {
        if !self.conn.is_cluster() || cmds.len() < 2 {
            return self.send_together(cmds, resend).await;
        }
        // A cluster pipeline must stay in one slot: each command goes on its own, with the
        // WAIT that follows it (which must reach the same node), all at once.
        let mut units: Vec<&[Cmd]> = Vec::new();
        let mut start = 0;
        for i in 1..=cmds.len() {
            if i == cmds.len() || !is_wait(&cmds[i]) {
                units.push(&cmds[start..i]);
                start = i;
            }
        }
        let replies = futures_util::future::join_all(
            units.into_iter().map(|u| self.send_together(u, resend)),
        )
        .await;
        let mut out = Vec::with_capacity(cmds.len());
        for reply in replies {
            out.extend(reply?);
        }
        Ok(out)
    }

    pub(crate) async fn send_together(
        &self,
        cmds: &[Cmd],
        resend: Resend,
    ) -> Result<Vec<redis::RedisResult<Value>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        resend
            .send(&self.conn, |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await
            .map_err(|e| self.failed(e))
    }

    /// Sends `cmds` (logins, logouts, revocations) and, with durable writes, waits in the same
    /// round trip until one replica has them. Answers the commands' replies.
    pub(crate) async fn run_durable(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        self.run_durable_with(cmds, Resend::IfDropped).await
    }

    /// [`RedisStore::run_durable`], sent again after a dropped link only if `resend` says so.
    pub(crate) async fn run_durable_with(
        &self,
        cmds: Vec<Cmd>,
        resend: Resend,
    ) -> Result<Vec<Value>, StoreError> {
        let Some(timeout) = self.durable else {
            return self.run_each(cmds, resend).await?.into_iter().collect();
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(1)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        // One WAIT at the end covers the connection's earlier writes; on a cluster each
        // command may reach another node, so each gets its own.
        let count = cmds.len();
        let mut sent = Vec::with_capacity(count * 2);
        for (i, cmd) in cmds.into_iter().enumerate() {
            sent.push(cmd);
            if self.conn.is_cluster() || i + 1 == count {
                sent.push(wait.clone());
            }
        }
        let waits: Vec<bool> = sent.iter().map(is_wait).collect();
        let mut out = Vec::with_capacity(count);
        let replies: Vec<Value> = self
            .run_each(sent, resend)
            .await?
            .into_iter()
            .collect::<Result<_, _>>()?;
        for (reply, was_wait) in replies.into_iter().zip(waits) {
            match (was_wait, reply) {
                (false, reply) => out.push(reply),
                (true, Value::Int(n)) if n >= 1 => {}
                (true, _) => return Err(StoreError::unavailable(crate::NotReplicated(timeout))),
            }
        }
        Ok(out)
    }

    /// Sends one command that may run twice; a forgotten script is loaded and the command
    /// sent again, and so is a command whose link dropped.
    pub(crate) async fn one(&self, cmd: Cmd) -> Result<Value, StoreError> {
        self.one_with(cmd, Resend::IfDropped).await
    }

    /// Sends one command that must not run twice (it adds): never sent again after a dropped
    /// link, whose fate is unknown.
    pub(crate) async fn one_once(&self, cmd: Cmd) -> Result<Value, StoreError> {
        self.one_with(cmd, Resend::Never).await
    }

    pub(crate) async fn one_with(&self, cmd: Cmd, resend: Resend) -> Result<Value, StoreError> {
        let send = |mut conn: RedisConnection| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut conn).await }
        };
        match resend.send(&self.conn, send).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_scripts().await.map_err(|e| self.failed(e))?;
                resend
                    .send(&self.conn, send)
                    .await
                    .map_err(|e| self.failed(e))
            }
            reply => reply.map_err(|e| self.failed(e)),
        }
    }
}

/// Whether a command may be sent again on a fresh connection when its link dropped (a proxy's
/// idle timeout, `CLIENT KILL`, a network blip, a managed service's maintenance): the first
/// request after such a drop fails at once, though the command most likely never reached
/// Redis. Whether it did cannot be told, so only a command that may run twice is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Reads, logouts, and writes that set or remove fields: running twice does no harm.
    IfDropped,
    /// Increments and compare-and-sets (they add or check), login cycles and logged-in
    /// creates: an unknown fate is reported, never doubled.
    Never,
}

impl Resend {
    /// For a change: sent again only if it neither adds nor compares.
    pub(crate) fn for_changes(changes: &Changes) -> Self {
        if changes.increments.is_empty() && changes.expect.is_empty() {
            Self::IfDropped
        } else {
            Self::Never
        }
    }

    /// Runs `send` on `conn`, and once more (on the connection the link has by then
    /// replaced) if it failed because the link dropped and this kind may be sent again.
    pub(crate) async fn send<T, F, Fut>(
        self,
        conn: &RedisConnection,
        send: F,
    ) -> redis::RedisResult<T>
    where
        F: Fn(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match send(conn.clone()).await {
            Err(e) if self == Self::IfDropped && dropped(&e) => {
                tracing::debug!(error = %e, "Redis link dropped; sending the command again");
                send(conn.clone()).await
            }
            reply => reply,
        }
    }
}

/// Whether a store error is a dropped link (see [`dropped`]).
pub(crate) fn link_dropped(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(source) => source
            .downcast_ref::<redis::RedisError>()
            .is_some_and(dropped),
        _ => false,
    }
}

/// A connection that dropped under the command (not a timeout: a slow server is not retried
/// into a slower one).
pub(crate) fn dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

pub(crate) fn is_wait(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name)) if name == b"WAIT")
}

pub(crate) fn evalsha(script: Lua, keys: &[String], args: &[String]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.hash()).arg(keys.len()).arg(keys).arg(args);
    cmd
}
