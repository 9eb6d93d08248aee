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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::testing::DynStore;
use crate::{
    now_millis, Applied, Changes, Destroyed, Millis, Record, SessionId, SessionKey,
    SessionStore as _, StoreError,
};

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
    /// revocations survive it, counters and sets may go back to any earlier value).
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

/// A small deterministic generator (xorshift64*), so a seed replays the same history.
struct Rng(u64);

impl Rng {
    /// Every seed its own stream (splitmix64 of the seed; never the zero state).
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the model allows a session to hold.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Never created here.
    Absent,
    /// Live: the counter is within `min..=max` (max grows with increments of unknown fate),
    /// the field is one of `xs` (more than one after a set of unknown fate).
    Live {
        min: i64,
        max: i64,
        xs: BTreeSet<String>,
    },
    /// Ended by an acknowledged logout, revocation or cycle.
    Ended,
    /// An end (or a loss) of unknown fate: gone, or still as it was (a `Live` state).
    MaybeEnded(Box<State>),
    /// Its creation or cycle had an unknown fate: no longer used.
    Retired,
}

impl State {
    /// Whether a read answering `seen` fits this state.
    fn fits(&self, seen: Option<&Record>) -> bool {
        match (self, seen) {
            (Self::Live { min, max, xs }, Some(r)) => {
                let n: i64 = r.fields.get("n").and_then(|t| t.parse().ok()).unwrap_or(-1);
                let x = r.fields.get("x").cloned().unwrap_or_default();
                (*min..=*max).contains(&n) && xs.contains(&x)
            }
            (Self::MaybeEnded(_) | Self::Absent | Self::Ended, None) => true,
            (Self::MaybeEnded(was), seen) => was.fits(seen),
            _ => false,
        }
    }

    /// The state a session in this state had if an answer shows it still there.
    fn still_there(self) -> Self {
        match self {
            Self::MaybeEnded(was) => *was,
            other => other,
        }
    }
}

/// A session in play.
struct Slot {
    key: SessionKey,
    state: State,
    /// Every value its field was ever set to (or may have been): what a lost write leaves.
    ever: BTreeSet<String>,
    /// Earlier states and when each stopped being current (for cached reads).
    past: Vec<(Instant, State)>,
    /// The ID a renewal moved it from, readable (never writable) until the given time.
    alias: Option<(SessionKey, Millis)>,
}

impl Slot {
    fn fresh() -> Self {
        Self {
            key: SessionId::random().expect("OS randomness").key(),
            state: State::Absent,
            ever: BTreeSet::new(),
            past: Vec::new(),
            alias: None,
        }
    }

    /// What the model allows after a fault that may have lost `loss`.
    fn lose(&mut self, loss: Loss, bound: Duration) {
        let lost = match (&self.state, loss) {
            (_, Loss::Nothing) => return,
            (State::Live { max, .. }, Loss::Writes) => State::Live {
                min: 0,
                max: *max,
                xs: self.ever.clone(),
            },
            (State::Live { .. }, Loss::Everything) => {
                State::MaybeEnded(Box::new(self.state.clone()))
            }
            _ => return,
        };
        self.set(lost, bound);
    }

    fn set(&mut self, state: State, bound: Duration) {
        if let State::Live { xs, .. } = &state {
            self.ever.extend(xs.iter().cloned());
        }
        let old = std::mem::replace(&mut self.state, state);
        self.past.push((Instant::now(), old));
        self.past.retain(|(until, _)| until.elapsed() < bound * 4);
    }

    /// Whether `seen` (a read's answer) is allowed now; `cached` allows states that ended
    /// less than `bound` ago.
    fn allows(&self, seen: Option<&Record>, cached: bool, bound: Duration) -> bool {
        self.state.fits(seen)
            || (cached
                && self
                    .past
                    .iter()
                    .any(|(until, s)| until.elapsed() < bound && s.fits(seen)))
    }
}

/// A session that ended (acknowledged), kept to check that it stays ended.
struct Grave {
    key: SessionKey,
    since: Instant,
}

/// At most this many graves are kept, the oldest leaving first.
const GRAVES: usize = 16;

/// How long a renewal's old ID stays readable in the history.
const GRACE_MS: Millis = 2_000;

const USER: &str = "ada";

fn record(now: u64) -> Record {
    let mut r = Record::new(now, now + 600_000, now + 1_200_000);
    r.user = Some(USER.into());
    r.fields.insert("n".into(), "0".into());
    r.fields.insert("x".into(), "\"\"".into());
    r
}

fn live(min: i64, max: i64, x: &str) -> State {
    State::Live {
        min,
        max,
        xs: BTreeSet::from([x.to_owned()]),
    }
}

/// An operation's answer: `None` when it was dropped halfway.
async fn maybe_drop<T>(
    rng: &mut Rng,
    counts: &mut Counts,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Option<Result<T, StoreError>> {
    // One operation in fifteen is dropped after a few polls (the runtime's other thread moves
    // its I/O on meanwhile): a client that went away.
    if rng.below(15) != 0 {
        return Some(op.await);
    }
    let mut op = std::pin::pin!(op);
    for _ in 0..=rng.below(20) {
        let polled = std::future::poll_fn(|cx| match op.as_mut().poll(cx) {
            std::task::Poll::Ready(answer) => std::task::Poll::Ready(Some(answer)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        if polled.is_some() {
            return polled;
        }
        tokio::task::yield_now().await;
    }
    counts.dropped += 1;
    tokio::time::sleep(SETTLE).await;
    None
}

fn note<T>(counts: &mut Counts, result: &Option<Result<T, StoreError>>) {
    match result {
        Some(Ok(_)) => counts.answered += 1,
        Some(Err(_)) => counts.errors += 1,
        None => {}
    }
}

/// One history of `ops` operations from `seed` over `instances`, with `faults` struck about
/// once in fifty operations and waits past `bound` (the stale-read bound of the cached
/// instances; any value for strict ones) about once in thirty. Four sessions of one user are
/// in play at a time; an ended one is kept among the graves (checked to stay ended) and a
/// fresh one takes its place.
///
/// # Panics
/// When an answer breaks the model, naming the seed and the step.
#[allow(clippy::too_many_lines)] // one match over the operations reads best in one place
pub async fn run(
    instances: &[Instance],
    faults: &mut dyn Faults,
    seed: u64,
    ops: u64,
    bound: Duration,
) -> Counts {
    assert!(!instances.is_empty(), "a history needs an instance");
    let mut rng = Rng::new(seed);
    let mut slots: Vec<Slot> = (0..4).map(|_| Slot::fresh()).collect();
    let mut graves: Vec<Grave> = Vec::new();
    let mut counts = Counts::default();
    let user_index = !matches!(
        instances[0].store.list_user(USER, now_millis()).await,
        Err(StoreError::Unsupported(_))
    );
    let cached_ones: Vec<usize> = (0..instances.len())
        .filter(|&i| instances[i].cached)
        .collect();
    let strict_ones: Vec<usize> = (0..instances.len())
        .filter(|&i| !instances[i].cached)
        .collect();
    let count = instances.len() as u64;
    for step in 0..ops {
        counts.ops += 1;
        let fail = |what: &str| format!("seed {seed}, step {step}: {what}");
        match rng.below(100) {
            0..=1 => {
                let struck = faults.strike(rng.next()).await;
                *counts.faults.entry(struck.name).or_default() += 1;
                for slot in &mut slots {
                    slot.lose(struck.loss, bound);
                }
                continue;
            }
            // Time passes: a stale cached read would now be past the bound.
            2..=4 => {
                tokio::time::sleep(bound + Duration::from_millis(10)).await;
                counts.waits += 1;
                continue;
            }
            // A grave: it stays ended, read or written on any instance.
            5..=7 if !graves.is_empty() => {
                let grave = &graves[rng.below(graves.len() as u64) as usize];
                let i = rng.below(count) as usize;
                let (store, cached) = (&instances[i].store, instances[i].cached);
                let now = now_millis();
                if rng.below(2) == 0 {
                    if let Ok(Some(found)) = store.load(&grave.key, now, None).await {
                        assert!(
                            cached && grave.since.elapsed() < bound,
                            "{}",
                            fail(&format!("instance {i} read an ended session: {found:?}"))
                        );
                    }
                } else {
                    let mut one = Changes::default();
                    one.increments.insert("n".into(), 1);
                    let applied = store.apply(&grave.key, &one, now).await;
                    assert!(
                        !matches!(applied, Ok(Applied::Done { .. })),
                        "{}",
                        fail("a write reached an ended session")
                    );
                }
                counts.grave_checks += 1;
                continue;
            }
            _ => {}
        }
        // Half reads; then increments, sets, compare-and-sets, logouts, logins, revocations.
        let op = rng.below(16);
        // Reads go to a cached instance half the time: that is where staleness would show.
        let i = if op < 8 && !cached_ones.is_empty() && rng.below(2) == 0 {
            cached_ones[rng.below(cached_ones.len() as u64) as usize]
        } else {
            rng.below(count) as usize
        };
        let (store, cached) = (&instances[i].store, instances[i].cached);
        let s = rng.below(slots.len() as u64) as usize;
        let now = now_millis();
        let key = slots[s].key;
        // A renewal's old ID, well inside its grace window: reads and revocations may use it.
        let alias = slots[s]
            .alias
            .filter(|&(_, until)| now + 500 < until)
            .map(|(k, _)| k);
        match (op, slots[s].state.clone()) {
            (_, State::Retired) => slots[s] = Slot::fresh(),
            (_, State::Ended) => {
                let ended = std::mem::replace(&mut slots[s], Slot::fresh());
                if graves.len() == GRAVES {
                    graves.remove(0);
                }
                let since = ended.past.last().map_or_else(Instant::now, |(at, _)| *at);
                graves.push(Grave {
                    key: ended.key,
                    since,
                });
            }
            (_, State::Absent) => {
                let created =
                    maybe_drop(&mut rng, &mut counts, store.create(&key, &record(now))).await;
                note(&mut counts, &created);
                match created {
                    Some(Ok(())) => slots[s].set(live(0, 0, "\"\""), bound),
                    _ => slots[s].set(State::Retired, bound),
                }
            }
            (0..=7, state) => {
                // Through the old ID now and then (strict instances: the alias is read where
                // it is filed).
                let via_alias = alias.filter(|_| !cached && rng.below(3) == 0);
                let read = maybe_drop(
                    &mut rng,
                    &mut counts,
                    store.load(&via_alias.unwrap_or(key), now, None),
                )
                .await;
                note(&mut counts, &read);
                if let Some(Ok(loaded)) = &read {
                    let seen = loaded.as_ref().map(|l| &l.record);
                    let slot = &mut slots[s];
                    assert!(
                        slot.allows(seen, cached, bound),
                        "{}",
                        fail(&format!(
                            "instance {i} read {seen:?}{}, model {:?}",
                            if via_alias.is_some() {
                                " through the old ID"
                            } else {
                                ""
                            },
                            slot.state
                        ))
                    );
                    if let Some(loaded) = loaded {
                        assert_eq!(loaded.key, key, "{}", fail("a read answered another key"));
                        counts.live_reads += 1;
                    }
                    match (seen, state) {
                        (None, State::MaybeEnded(_)) => slot.set(State::Ended, bound),
                        (Some(_), State::MaybeEnded(was)) if !cached => slot.set(*was, bound),
                        _ => {}
                    }
                }
            }
            (8 | 9, state) => {
                let mut one = Changes::default();
                one.increments.insert("n".into(), 1);
                // Through the old ID now and then: never written through.
                if let Some(old) = alias.filter(|_| rng.below(4) == 0) {
                    let applied = store.apply(&old, &one, now).await;
                    assert!(
                        !matches!(applied, Ok(Applied::Done { .. })),
                        "{}",
                        fail("a write went through a renewal's old ID")
                    );
                    counts.answered += 1;
                    continue;
                }
                let applied = maybe_drop(&mut rng, &mut counts, store.apply(&key, &one, now)).await;
                note(&mut counts, &applied);
                let slot = &mut slots[s];
                match (applied, state.clone().still_there()) {
                    (Some(Ok(Applied::Done { counters, .. })), State::Live { min, max, xs }) => {
                        let n = counters["n"];
                        assert!(
                            (min + 1..=max + 1).contains(&n),
                            "{}",
                            fail(&format!("increment gave {n}, model {min}..={max} + 1"))
                        );
                        slot.set(State::Live { min: n, max: n, xs }, bound);
                    }
                    (result, _) => settle_write(slot, result, state, bound, &fail, None),
                }
            }
            (10, state) => {
                let x = format!("\"v{step}\"");
                let mut set = Changes::default();
                set.set.insert("x".into(), x.clone());
                let applied = maybe_drop(&mut rng, &mut counts, store.apply(&key, &set, now)).await;
                note(&mut counts, &applied);
                settle_write(&mut slots[s], applied, state, bound, &fail, Some(x));
            }
            (11, state) => {
                // A compare-and-set from the value the model knows (or a guess among the
                // possible ones): `Session::update`.
                let State::Live { xs, .. } = state.clone().still_there() else {
                    continue;
                };
                // A third of the time a value it no longer holds: a request that read
                // before another one wrote.
                let guess = if rng.below(3) == 0 {
                    format!("\"old{step}\"")
                } else {
                    xs.iter()
                        .nth(rng.below(xs.len() as u64) as usize)
                        .cloned()
                        .unwrap_or_default()
                };
                let x = format!("\"c{step}\"");
                let mut cas = Changes::default();
                cas.set.insert("x".into(), x.clone());
                cas.expect.insert("x".into(), Some(guess.clone()));
                let applied = maybe_drop(&mut rng, &mut counts, store.apply(&key, &cas, now)).await;
                note(&mut counts, &applied);
                let slot = &mut slots[s];
                // Refused wrongly only when the model knows the value and it matched.
                let must_take = xs.len() == 1 && xs.contains(&guess);
                match applied {
                    Some(Err(StoreError::Conflict(_))) => {
                        assert!(
                            !must_take || matches!(state, State::MaybeEnded(_)),
                            "{}",
                            fail(&format!(
                                "compare-and-set from {guess} refused, model {xs:?}"
                            ))
                        );
                        if let State::Live { min, max, mut xs } = state.still_there() {
                            xs.remove(&guess);
                            slot.set(State::Live { min, max, xs }, bound);
                        }
                    }
                    Some(Ok(Applied::Done { .. })) => {
                        assert!(
                            xs.contains(&guess),
                            "{}",
                            fail(&format!("compare-and-set from {guess} took, model {xs:?}"))
                        );
                        if let State::Live { min, max, .. } = state.still_there() {
                            slot.set(live(min, max, &x), bound);
                        }
                    }
                    result => settle_write(slot, result, state, bound, &fail, Some(x)),
                }
            }
            (12, state) => {
                let destroyed = maybe_drop(&mut rng, &mut counts, store.destroy(&key)).await;
                note(&mut counts, &destroyed);
                let slot = &mut slots[s];
                match (destroyed, state) {
                    (Some(Ok(Destroyed::Alias)), _) => {
                        panic!("{}", fail("a session's own ID was taken for an alias"))
                    }
                    (Some(Ok(_)), _) => slot.set(State::Ended, bound),
                    (_, live @ State::Live { .. }) => {
                        slot.set(State::MaybeEnded(Box::new(live)), bound);
                    }
                    _ => {}
                }
            }
            (13, State::Live { .. }) if user_index => {
                // "Log out my other devices" from this session, now and then through the ID
                // a renewal just replaced (the session it reaches is the caller's).
                let keep = alias.filter(|_| rng.below(2) == 0).unwrap_or(key);
                let revoked = maybe_drop(
                    &mut rng,
                    &mut counts,
                    store.destroy_user(USER, Some(&keep), now),
                )
                .await;
                note(&mut counts, &revoked);
                for (j, other) in slots.iter_mut().enumerate() {
                    if j == s {
                        continue;
                    }
                    match (&revoked, &other.state) {
                        (Some(Ok(_)), State::Live { .. } | State::MaybeEnded(_)) => {
                            other.set(State::Ended, bound);
                        }
                        (_, live @ State::Live { .. }) => {
                            let maybe = State::MaybeEnded(Box::new(live.clone()));
                            other.set(maybe, bound);
                        }
                        _ => {}
                    }
                }
            }
            (_, state) => {
                // A login (no old ID left) or, half the time, a renewal (the old ID reads for
                // a grace window): the session moves to a new ID.
                let renewal = rng.below(2) == 0;
                let grace_until = if renewal { now + GRACE_MS } else { now };
                let new = loop {
                    let new = SessionId::random().expect("OS randomness").key();
                    if store.can_cycle_to(&key, &new) {
                        break new;
                    }
                };
                let cycled = maybe_drop(
                    &mut rng,
                    &mut counts,
                    store.cycle(&key, &new, &Changes::default(), now, grace_until),
                )
                .await;
                note(&mut counts, &cycled);
                match (cycled, state.clone().still_there()) {
                    (Some(Ok(Applied::Done { key: moved, .. })), State::Live { min, max, xs }) => {
                        assert_eq!(moved, new, "{}", fail("a cycle moved elsewhere"));
                        let slot = &mut slots[s];
                        slot.set(State::Ended, bound);
                        let old = std::mem::replace(
                            slot,
                            Slot {
                                key: new,
                                state: State::Live { min, max, xs },
                                ever: slot.ever.clone(),
                                past: Vec::new(),
                                alias: renewal.then_some((key, grace_until)),
                            },
                        );
                        // After a login the old ID reaches nothing: a grave at once.
                        if !renewal {
                            if graves.len() == GRAVES {
                                graves.remove(0);
                            }
                            graves.push(Grave {
                                key: old.key,
                                since: Instant::now(),
                            });
                        }
                    }
                    (Some(Ok(Applied::Done { .. })), State::Ended) => {
                        panic!("{}", fail("an ended session was cycled"))
                    }
                    (Some(Ok(Applied::Gone)), State::Live { .. })
                        if !matches!(state, State::MaybeEnded(_)) =>
                    {
                        panic!("{}", fail("a live session was gone"))
                    }
                    (Some(Ok(Applied::Gone)), _) => slots[s].set(State::Ended, bound),
                    (_, State::Live { .. }) => slots[s].set(State::Retired, bound),
                    _ => {}
                }
            }
        }
    }
    // Finally, every live session reads back as the model says, on a strict instance.
    let strict = strict_ones
        .first()
        .map_or(&instances[0], |&i| &instances[i]);
    tokio::time::sleep(bound).await;
    for slot in &slots {
        if let State::Live { .. } = slot.state {
            let started = Instant::now();
            let read = loop {
                match strict.store.load(&slot.key, now_millis(), None).await {
                    Ok(read) => break read,
                    Err(_) if started.elapsed() < Duration::from_secs(10) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("seed {seed}: final read failed: {e}"),
                }
            };
            assert!(
                slot.allows(read.as_ref().map(|l| &l.record), false, bound),
                "seed {seed}: final read {read:?}, model {:?}",
                slot.state
            );
        }
    }
    counts
}

/// The model after a write (increment, set, compare-and-set) that did not settle as a
/// success on a live session: `x` is the value a set would have written.
fn settle_write(
    slot: &mut Slot,
    result: Option<Result<Applied, StoreError>>,
    state: State,
    bound: Duration,
    fail: &dyn Fn(&str) -> String,
    x: Option<String>,
) {
    let maybe = matches!(state, State::MaybeEnded(_));
    match (result, state.still_there()) {
        (Some(Ok(Applied::Done { .. })), State::Live { min, max, .. }) => {
            // A set that took (an increment's success is checked by its caller).
            let x = x.expect("only a set reaches here with a success");
            slot.set(live(min, max, &x), bound);
        }
        (Some(Ok(Applied::Done { .. })), State::Ended) => {
            panic!("{}", fail("a write reached an ended session"))
        }
        (Some(Ok(Applied::Gone)), State::Live { .. }) if !maybe => {
            panic!("{}", fail("a live session was gone"))
        }
        (Some(Ok(Applied::Gone)), _) => slot.set(State::Ended, bound),
        (Some(Ok(Applied::Aliased)), _) => {
            panic!("{}", fail("a session's own ID was taken for an alias"))
        }
        (Some(Err(_)) | None, State::Live { min, max, mut xs }) => {
            // Unknown fate: an increment may have counted, a set may have landed.
            let after = match x {
                Some(x) => {
                    xs.insert(x);
                    State::Live { min, max, xs }
                }
                None => State::Live {
                    min,
                    max: max + 1,
                    xs,
                },
            };
            if maybe {
                slot.set(State::MaybeEnded(Box::new(after)), bound);
            } else {
                slot.set(after, bound);
            }
        }
        _ => {}
    }
}
