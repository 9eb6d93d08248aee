//! The single writer thread and its group commit.
//!
//! redb allows one write transaction at a time and an fsync costs milliseconds. Rather than
//! make each request wait its turn for its own fsync, the writer takes every job that is
//! waiting, runs them all in one transaction, commits (one fsync) and only then answers each.
//! Under load, hundreds of writes share one sync; a lone write pays one sync, as it must.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cloakroom::StoreError;
use redb::{Database, WriteTransaction};

/// Called with the commit's outcome (`None` on success) once the batch is durable.
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> Completion + Send>;
type Maintenance = Box<dyn Fn(&WriteTransaction) -> Result<(), StoreError> + Send>;

/// Most jobs in one transaction, so one huge burst cannot delay its first writer for long.
const MAX_BATCH: usize = 512;
/// Most jobs waiting for the writer. Past this a write is refused at once
/// ([`StoreError::Overloaded`]) rather than queued behind work its caller will have given up on.
const MAX_QUEUED: usize = 4096;

struct Inner {
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the writer thread. Clones share it.
#[derive(Clone)]
pub(crate) struct Writer {
    inner: Arc<Inner>,
}

fn closed() -> StoreError {
    StoreError::unavailable(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the embedded store is closed",
    ))
}

impl Writer {
    /// Starts the writer; `maintenance` runs in its own transaction every `period`.
    pub(crate) fn start(
        db: Arc<Database>,
        period: Duration,
        maintenance: impl Fn(&WriteTransaction) -> Result<(), StoreError> + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(MAX_QUEUED);
        let maintenance: Maintenance = Box::new(maintenance);
        let thread = std::thread::Builder::new()
            .name("cloakroom-writer".into())
            .spawn(move || run(&db, &rx, period, &maintenance))
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the embedded store's writer thread");
        }
        Self {
            inner: Arc::new(Inner {
                jobs: Mutex::new(Some(tx)),
                thread: Mutex::new(thread),
            }),
        }
    }

    /// Runs `f` in the next batch; resolves once the batch is committed.
    pub(crate) async fn submit<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |txn| {
            if tx.is_closed() {
                // The caller gave up (timeout, hang-up): a write it never learns of must not
                // happen later behind its back.
                return Box::new(|_: Option<&str>| {});
            }
            let result = f(txn);
            Box::new(move |failure: Option<&str>| {
                let _ = tx.send(match failure {
                    None => result,
                    Some(why) => Err(StoreError::unavailable(std::io::Error::other(
                        why.to_owned(),
                    ))),
                });
            })
        });
        {
            let jobs = self.inner.jobs.lock().map_err(|_| closed())?;
            match jobs.as_ref().ok_or_else(closed)?.try_send(job) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(_)) => return Err(StoreError::Overloaded),
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(closed()),
            }
        }
        rx.await.map_err(|_| closed())?
    }

    /// Stops taking jobs, finishes the queued ones, and waits for the thread to end.
    pub(crate) fn shutdown(&self) {
        if let Ok(mut jobs) = self.inner.jobs.lock() {
            jobs.take();
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Job>, period: Duration, maintenance: &Maintenance) {
    let mut last_maintenance = Instant::now();
    loop {
        let mut jobs = Vec::new();
        match rx.recv_timeout(period) {
            Ok(job) => {
                jobs.push(job);
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if last_maintenance.elapsed() >= period {
            last_maintenance = Instant::now();
            let outcome = db
                .begin_write()
                .map_err(StoreError::unavailable)
                .and_then(|txn| {
                    maintenance(&txn)?;
                    txn.commit().map_err(StoreError::unavailable)
                });
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "embedded store maintenance failed");
            }
        }
        if !jobs.is_empty() {
            commit_batch(db, jobs);
        }
    }
}

fn commit_batch(db: &Database, jobs: Vec<Job>) {
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            let why = e.to_string();
            tracing::error!(error = %why, "embedded store: cannot begin a write");
            // Dropping a job drops its reply channel: its caller gets an error, not a hang.
            drop(jobs);
            return;
        }
    };
    // A job that panics must not take the writer thread (and so every later write) with it.
    // Its changes may be half made, so the whole batch is rolled back and every caller told.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        jobs.into_iter()
            .map(|job| job(&txn))
            .collect::<Vec<Completion>>()
    }));
    let Ok(completions) = ran else {
        tracing::error!("embedded store: a write job panicked; its batch was rolled back");
        drop(txn);
        return;
    };
    match txn.commit() {
        Ok(()) => completions.into_iter().for_each(|c| c(None)),
        Err(e) => {
            let why = e.to_string();
            tracing::error!(error = %why, "embedded store: commit failed");
            completions.into_iter().for_each(|c| c(Some(&why)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn writer() -> (Writer, std::path::PathBuf) {
        // One folder per call: tests run in parallel threads of one process (`cargo test`),
        // and two starting in the same millisecond must not open one database.
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cloakroom-writer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Arc::new(Database::create(dir.join("w.redb")).unwrap());
        (
            Writer::start(db, Duration::from_secs(3600), |_| Ok(())),
            dir,
        )
    }

    /// Blocks the writer thread for `ms`, so that later jobs queue up behind it.
    fn stall(w: &Writer, ms: u64) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let w = w.clone();
        tokio::spawn(async move {
            w.submit(move |_| {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            })
            .await
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_its_batch_and_the_writer_lives_on() {
        let (w, _dir) = writer();
        let result = w
            .submit(|_| -> Result<(), StoreError> { panic!("bad job") })
            .await;
        assert!(result.is_err());
        assert!(w.submit(|_| Ok(7)).await.is_ok_and(|n| n == 7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_gave_up_never_runs() {
        static RAN: AtomicBool = AtomicBool::new(false);
        let (w, _dir) = writer();
        let stalled = stall(&w, 300);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let late = tokio::time::timeout(
            Duration::from_millis(50),
            w.submit(|_| {
                RAN.store(true, Ordering::SeqCst);
                Ok(())
            }),
        )
        .await;
        assert!(late.is_err(), "timed out while the writer was stalled");
        stalled.await.unwrap().unwrap();
        w.submit(|_| Ok(())).await.unwrap();
        assert!(
            !RAN.load(Ordering::SeqCst),
            "the abandoned write did not run later"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_is_bounded_and_refuses_at_once_when_full() {
        let (w, _dir) = writer();
        let stalled = stall(&w, 1500);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for _ in 0..(MAX_QUEUED + 100) {
            let (w, refused) = (w.clone(), refused.clone());
            waiting.push(tokio::spawn(async move {
                if matches!(w.submit(|_| Ok(())).await, Err(StoreError::Overloaded)) {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for task in waiting {
            task.await.unwrap();
        }
        stalled.await.unwrap().unwrap();
        assert!(refused.load(Ordering::SeqCst) >= 100, "{refused:?}");
    }
}
