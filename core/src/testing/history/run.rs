//! One history: the random operations, the faults and dropped futures, and every answer
//! held to the model.

use std::time::{Duration, Instant};

use crate::{now_millis, Applied, Changes, Destroyed, SessionId, StoreError};

use super::model::*;
use super::*;

/// An operation's answer: `None` when it was dropped halfway.
pub(super) async fn maybe_drop<T>(
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

pub(super) fn note<T>(counts: &mut Counts, result: &Option<Result<T, StoreError>>) {
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
                if struck.loss == Loss::Writes {
                    graves.retain(|g| !g.observed);
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
                    observed: ended.seen_end,
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
                        (None, State::MaybeEnded(_)) => {
                            slot.set(State::Ended, bound);
                            slot.seen_end = true;
                        }
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
                                seen_end: false,
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
                                observed: false,
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
                    (Some(Ok(Applied::Gone)), _) => {
                        slots[s].set(State::Ended, bound);
                        slots[s].seen_end = true;
                    }
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
