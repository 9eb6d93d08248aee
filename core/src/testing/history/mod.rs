//! A generated history, checked against a model of the store contract: a few instances of one
//! store (app instances sharing it; some may read through a cache) take random creates, reads,
//! increments, sets, compare-and-sets, logins (ID cycles), logouts and revocations of the
//! user's other sessions on a few sessions, while time passes, futures are dropped halfway, and
//! the store's own faults ([`Faults`]: links killed, servers restarted) strike. Every
//! acknowledged answer is held to the model:
//!
//! - an increment's new value is exact, or within the increments whose fate was unknown: no
//!   acknowledged increment lost, none counted twice;
//! - a read shows the model's state, or (through a cache) one that ended less than the stated
//!   bound ago;
//! - a compare-and-set succeeds exactly when the model's value matches, and is refused only
//!   when it did not (or its value was unknown);
//! - after an acknowledged logout, revocation or cycle away, no write succeeds and no read
//!   finds the session (strict at once, cached past the bound): no resurrection.
//!
//! An operation whose answer is an error or that was dropped has an unknown fate: the model
//! allows either outcome from then on, until an acknowledged answer settles it. A dropped
//! future may still run on the store's side (a writer thread, a request already sent), so the
//! history waits [`SETTLE`] after one before it goes on.
//!
//! The seed is printed; `CLOAKROOM_SEED=<n>` replays one, `CLOAKROOM_LONG=1` runs more and
//! longer histories ([`plan`]).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::testing::DynStore;
use crate::SessionStore as _;

mod model;
mod run;

pub use run::run;

/// How long a dropped operation may still take effect on the store's side.
pub const SETTLE: Duration = Duration::from_millis(100);

/// One instance of the store in a history.
pub struct Instance {
    /// The store, as this instance sees it.
    pub store: DynStore,
    /// Whether its reads may come from a cache, stale by at most the history's bound.
    pub cached: bool,
}

/// What a fault may lose, by the promise of the configuration it runs with (the table in
/// `docs/store-contract.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing acknowledged (links dropped; a restart with every write on disk).
    Nothing,
    /// Acknowledged field writes (a failover with durable writes: logins, logouts and
    /// revocations survive it, counters and sets may go back to any earlier value). An end
    /// that was only seen (a logout whose answer was lost, then a `Gone`) may be undone too:
    /// it was never replicated.
    Writes,
    /// Anything but an end (a restart without persistence: sessions may vanish, none that
    /// ended comes back).
    Everything,
}

/// A fault that struck: its name (for the counts) and what it may have lost.
#[derive(Debug, Clone, Copy)]
pub struct Struck {
    /// Its name.
    pub name: &'static str,
    /// What it may have lost.
    pub loss: Loss,
}

impl Struck {
    /// A fault that loses nothing acknowledged.
    #[must_use]
    pub fn harmless(name: &'static str) -> Self {
        Self {
            name,
            loss: Loss::Nothing,
        }
    }
}

/// A store's own faults, struck now and then by the history.
#[async_trait]
pub trait Faults: Send {
    /// Strikes one fault, chosen from `pick` (any number: the store maps it to one of its
    /// faults). Returns once the store answers again, or may answer again (bounded).
    async fn strike(&mut self, pick: u64) -> Struck;
}

/// A store with no faults of its own: time passing and dropped futures only.
pub struct NoFaults;

#[async_trait]
impl Faults for NoFaults {
    async fn strike(&mut self, _pick: u64) -> Struck {
        Struck::harmless("none")
    }
}

/// What a history checked.
#[derive(Debug, Default)]
pub struct Counts {
    /// Operations generated.
    pub ops: u64,
    /// Operations the store answered without an error.
    pub answered: u64,
    /// Operations that failed (unknown fate).
    pub errors: u64,
    /// Operations dropped halfway (unknown fate).
    pub dropped: u64,
    /// Waits past the stale-read bound.
    pub waits: u64,
    /// Reads that found a live session and were held to its modelled contents.
    pub live_reads: u64,
    /// Reads and writes of ended sessions held to staying ended.
    pub grave_checks: u64,
    /// Faults struck, by name.
    pub faults: BTreeMap<&'static str, u64>,
}

/// The seeds and the operations per history a run checks: `CLOAKROOM_SEED` replays one;
/// `CLOAKROOM_LONG=1` checks 20 histories of 5,000 operations; otherwise `histories` of
/// `ops`, from fresh seeds.
#[must_use]
pub fn plan(histories: u64, ops: u64) -> (Vec<u64>, u64) {
    let long = std::env::var_os("CLOAKROOM_LONG").is_some();
    let ops = if long { 5_000 } else { ops };
    if let Ok(seed) = std::env::var("CLOAKROOM_SEED") {
        return (vec![seed.parse().expect("CLOAKROOM_SEED is a number")], ops);
    }
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = if long { 20 } else { histories };
    ((0..n).map(|i| base.wrapping_add(i)).collect(), ops)
}

/// Runs the histories [`plan`] gives, printing each seed before it runs (so a failure can be
/// replayed) and its counts after; returns the totals.
///
/// # Panics
/// When a history breaks the model, with the seed and the step.
pub async fn check<F, Fut>(name: &str, histories: u64, ops: u64, mut history: F) -> Counts
where
    F: FnMut(u64, u64) -> Fut,
    Fut: std::future::Future<Output = Counts>,
{
    let (seeds, ops) = plan(histories, ops);
    let mut total = Counts::default();
    for seed in seeds {
        eprintln!("{name}: history seed {seed} (replay: CLOAKROOM_SEED={seed})");
        let counts = history(seed, ops).await;
        eprintln!("{name}: seed {seed}: {counts:?}");
        total.ops += counts.ops;
        total.answered += counts.answered;
        total.errors += counts.errors;
        total.dropped += counts.dropped;
        total.waits += counts.waits;
        total.live_reads += counts.live_reads;
        total.grave_checks += counts.grave_checks;
        for (fault, n) in counts.faults {
            *total.faults.entry(fault).or_default() += n;
        }
    }
    eprintln!("{name}: checked {total:?}");
    total
}
