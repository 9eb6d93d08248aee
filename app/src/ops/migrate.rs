//! `cloakroom migrate --from URL --to URL`: copies every session from one store to another in
//! the background while the app runs with both (`cloakroom::MigratingStore` moves the sessions
//! its requests touch meanwhile). Resumable (the walk's position is saved after every page)
//! and idempotent (a session already in the new store is left alone).

use std::io::Write as _;
use std::path::Path;

use cloakroom::{now_millis, MigratingStore, Moved, SessionStore};

use super::*;

/// Sessions asked for per page.
const PAGE: usize = 500;

/// The longest one move may take.
const MOVE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Moved to the new store.
    pub moved: u64,
    /// Already in the new store (moved by a request, or ended there).
    pub skipped: u64,
    /// Gone from the old store by the time they were reached (expired, ended, or an alias).
    pub expired: u64,
}

/// Walks `from` and moves each session it lists through `store`, saving the walk's position
/// in `state` after every page (and starting from it when it exists); `progress` is told the
/// figures so far and the total to expect, if known.
///
/// # Errors
/// A store error, or the state file cannot be written; the walk resumes from the last page.
pub async fn copy_all(
    store: &MigratingStore,
    from: &dyn SessionStore,
    state: Option<&Path>,
    mut progress: impl FnMut(Copied, Option<u64>),
) -> Result<Copied, OpsError> {
    let total = from.stats().await.ok().map(|s| s.sessions);
    let mut cursor = state
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned());
    if cursor.as_deref() == Some("done") {
        return Ok(Copied::default());
    }
    let mut copied = Copied::default();
    loop {
        let page = from
            .scan(cursor.as_deref().filter(|c| !c.is_empty()), PAGE)
            .await?;
        for key in &page.keys {
            // Bounded: a move must land well within the ended markers' hour (a stalled one
            // stops the copy, which resumes at the next start).
            let moved = tokio::time::timeout(MOVE_LIMIT, store.move_one(key, now_millis()))
                .await
                .map_err(|_| cloakroom::StoreError::Timeout(MOVE_LIMIT))??;
            match moved {
                Moved::Moved => copied.moved += 1,
                Moved::AlreadyThere => copied.skipped += 1,
                Moved::Absent => copied.expired += 1,
            }
        }
        progress(copied, total);
        cursor = page.next;
        if let Some(path) = state {
            std::fs::write(path, cursor.as_deref().unwrap_or("done"))
                .map_err(|e| OpsError::State(format!("{}: {e}", path.display())))?;
        }
        if cursor.is_none() {
            return Ok(copied);
        }
    }
}

/// A progress bar on one terminal line.
fn bar(copied: Copied, total: Option<u64>) -> String {
    let done = copied.moved + copied.skipped + copied.expired;
    let shown = match total {
        Some(total) if total > 0 => {
            let filled = usize::try_from((done.min(total) * 30) / total).unwrap_or(30);
            format!(
                "[{}{}] {done}/{total}",
                "#".repeat(filled),
                ".".repeat(30 - filled)
            )
        }
        _ => format!("{done} sessions"),
    };
    format!(
        "{shown}  moved {}, already there {}, expired {}",
        copied.moved, copied.skipped, copied.expired
    )
}

/// `cloakroom migrate --from URL --to URL [--state FILE]`.
///
/// # Errors
/// [`OpsError`].
pub async fn migrate(
    from: &StoreArgs,
    to: &StoreArgs,
    state: Option<&Path>,
) -> Result<String, OpsError> {
    let (old, new) = (open(from).await?, open(to).await?);
    let store = MigratingStore::from_arcs(old.sessions.clone(), new.sessions.clone());
    let copied = copy_all(&store, old.sessions.as_ref(), state, |c, total| {
        let mut err = std::io::stderr();
        let _ = write!(err, "\r{}", bar(c, total));
        let _ = err.flush();
    })
    .await;
    eprintln!();
    old.close();
    new.close();
    let copied = copied?;
    Ok(format!(
        "moved {}, already in the new store {}, expired or ended {}\n",
        copied.moved, copied.skipped, copied.expired
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_the_figures() {
        let c = Copied {
            moved: 5,
            skipped: 3,
            expired: 2,
        };
        assert_eq!(
            bar(c, Some(20)),
            "[###############...............] 10/20  moved 5, already there 3, expired 2"
        );
        assert!(bar(c, None).starts_with("10 sessions"));
    }
}
