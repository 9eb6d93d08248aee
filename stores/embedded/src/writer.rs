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

struct Inner {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
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
        let (tx, rx) = mpsc::channel::<Job>();
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
            jobs.as_ref()
                .ok_or_else(closed)?
                .send(job)
                .map_err(|_| closed())?;
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
    let completions: Vec<Completion> = jobs.into_iter().map(|job| job(&txn)).collect();
    match txn.commit() {
        Ok(()) => completions.into_iter().for_each(|c| c(None)),
        Err(e) => {
            let why = e.to_string();
            tracing::error!(error = %why, "embedded store: commit failed");
            completions.into_iter().for_each(|c| c(Some(&why)));
        }
    }
}
