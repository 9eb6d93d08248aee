//! The model a history is checked against: what each session may hold (exactly, within a
//! range, maybe ended), the sessions that ended, and the generator that makes a seed replay.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::{Applied, Millis, Record, SessionId, SessionKey, StoreError};

use super::*;

/// A small deterministic generator (xorshift64*), so a seed replays the same history.
pub(super) struct Rng(u64);

impl Rng {
    /// Every seed its own stream (splitmix64 of the seed; never the zero state).
    pub(super) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the model allows a session to hold.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum State {
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
    pub(super) fn fits(&self, seen: Option<&Record>) -> bool {
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
    pub(super) fn still_there(self) -> Self {
        match self {
            Self::MaybeEnded(was) => *was,
            other => other,
        }
    }
}

/// A session in play.
pub(super) struct Slot {
    pub(super) key: SessionKey,
    pub(super) state: State,
    /// Every value its field was ever set to (or may have been): what a lost write leaves.
    pub(super) ever: BTreeSet<String>,
    /// Earlier states and when each stopped being current (for cached reads).
    pub(super) past: Vec<(Instant, State)>,
    /// The ID a renewal moved it from, readable (never writable) until the given time.
    pub(super) alias: Option<(SessionKey, Millis)>,
    /// Its end was only seen (a `Gone` or a read of nothing after an end of unknown fate),
    /// not acknowledged: a failover that loses unreplicated writes may undo it.
    pub(super) seen_end: bool,
}

impl Slot {
    pub(super) fn fresh() -> Self {
        Self {
            key: SessionId::random().expect("OS randomness").key(),
            state: State::Absent,
            ever: BTreeSet::new(),
            past: Vec::new(),
            alias: None,
            seen_end: false,
        }
    }

    /// What the model allows after a fault that may have lost `loss`.
    pub(super) fn lose(&mut self, loss: Loss, bound: Duration) {
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
            // Maybe ended, maybe still there: if still there, its writes may go back too.
            (State::MaybeEnded(inner), Loss::Writes) => match inner.as_ref() {
                State::Live { max, .. } => State::MaybeEnded(Box::new(State::Live {
                    min: 0,
                    max: *max,
                    xs: self.ever.clone(),
                })),
                _ => return,
            },
            // An end only seen may be undone with the writes around it: no longer followed.
            (State::Ended, Loss::Writes) if self.seen_end => State::Retired,
            _ => return,
        };
        self.set(lost, bound);
    }

    pub(super) fn set(&mut self, state: State, bound: Duration) {
        if let State::Live { xs, .. } = &state {
            self.ever.extend(xs.iter().cloned());
        }
        self.seen_end = false;
        let old = std::mem::replace(&mut self.state, state);
        self.past.push((Instant::now(), old));
        self.past.retain(|(until, _)| until.elapsed() < bound * 4);
    }

    /// Whether `seen` (a read's answer) is allowed now; `cached` allows states that ended
    /// less than `bound` ago.
    pub(super) fn allows(&self, seen: Option<&Record>, cached: bool, bound: Duration) -> bool {
        self.state.fits(seen)
            || (cached
                && self
                    .past
                    .iter()
                    .any(|(until, s)| until.elapsed() < bound && s.fits(seen)))
    }
}

/// A session that ended (acknowledged), kept to check that it stays ended.
pub(super) struct Grave {
    pub(super) key: SessionKey,
    pub(super) since: Instant,
    /// Its end was only seen, not acknowledged (see [`Slot::seen_end`]).
    pub(super) observed: bool,
}

/// At most this many graves are kept, the oldest leaving first.
pub(super) const GRAVES: usize = 16;

/// How long a renewal's old ID stays readable in the history.
pub(super) const GRACE_MS: Millis = 2_000;

pub(super) const USER: &str = "ada";

pub(super) fn record(now: u64) -> Record {
    let mut r = Record::new(now, now + 600_000, now + 1_200_000);
    r.user = Some(USER.into());
    r.fields.insert("n".into(), "0".into());
    r.fields.insert("x".into(), "\"\"".into());
    r
}

pub(super) fn live(min: i64, max: i64, x: &str) -> State {
    State::Live {
        min,
        max,
        xs: BTreeSet::from([x.to_owned()]),
    }
}

/// The model after a write (increment, set, compare-and-set) that did not settle as a
/// success on a live session: `x` is the value a set would have written.
pub(super) fn settle_write(
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
        (Some(Ok(Applied::Gone)), _) => {
            slot.set(State::Ended, bound);
            slot.seen_end = true;
        }
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
