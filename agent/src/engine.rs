//! The seam between a session and an engine: the run's configuration, the handle on a running workload, how it ended, and what it reports.
//!
//! Engines (`crate::workload`, tokio; `crate::beam`, the BEAM) build a
//! [`Workload`] from [`Parts`]; nothing here knows which engine runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cwbench::generator::Job;
use cwbench::proto;
use cwbench::spec::{Compute, Dispatch, Flavor};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::buffers::Buffers;
use crate::recorder::Recorder;
use crate::span::{End, Warmup};

/// A validated execution configuration (see proto `Profile`).
#[derive(Debug, Clone)]
pub struct Config {
    /// A tokio runtime in this process, or an Erlang VM started as a child
    /// process (crate::beam; `threads` is then its scheduler count).
    pub runtime: Flavor,
    /// Worker threads (tokio) or schedulers (BEAM).
    pub threads: usize,
    pub workers: usize,
    pub queue_bound: usize,
    pub producers: usize,
    pub shed: bool,
    /// Open loop: release each job at its intended time.
    pub open: bool,
    pub dispatch: Dispatch,
    /// The profile's compute placement: every class's, unless
    /// `class_compute` says otherwise.
    pub compute: Compute,
    /// Per class id, where its CPU step runs (a class's own placement, or
    /// the profile's): resolved, one entry per class, or empty when every
    /// class takes `compute`. See [`Config::placement`].
    pub class_compute: Vec<Compute>,
    pub yield_every: u32,
    /// Threads of the dedicated compute pool; 0 when no class uses it.
    pub compute_threads: usize,
    /// What is warm-up, and when the measured part ends.
    pub warmup: Warmup,
    pub end: End,
    pub classes: usize,
    /// Jobs a producer releases before it returns them as credit.
    pub credit_chunk: u64,
    /// Jobs' worth of emptied batch buffers kept for reuse (the credit
    /// window; 0 keeps none).
    pub recycle_jobs: u64,
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// Restart backoff: first delay and cap (zero = restart at once).
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub probe_interval: Duration,
    /// Jobs running longer than this from pick-up are abandoned (timed out).
    pub job_timeout: Option<Duration>,
    /// Pin the workload's threads (runtime, blocking, compute pool) here.
    pub cpus: Option<Vec<usize>>,
    /// Keep per-job records for the coordinator's --job-log.
    pub job_log: bool,
    /// Jobs whose worker is killed from outside when it picks them up.
    pub kill_jobs: std::collections::HashSet<u64>,
    /// A WebSocket client: each job is a task sent to this server
    /// (task-per-job dispatch, the in-flight bound `queue_bound`) instead
    /// of run here.
    pub remote: Option<crate::ws::client::Remote>,
    /// A WebSocket server: serve tasks with this run's settings (the
    /// agent's own jobs: none).
    pub serve: Option<proto::WebSocket>,
}

impl Default for Config {
    /// The plainest run: one tokio thread, one pool worker behind a bound
    /// of 16, closed loop, CPU inline, one class, every job measured, no
    /// restarts, faults, timeouts or WebSockets. What tests and the bench
    /// start from, naming only what differs (the session builds its own
    /// from the Start).
    fn default() -> Self {
        Self {
            runtime: Flavor::MultiThread,
            threads: 1,
            workers: 1,
            queue_bound: 16,
            producers: 1,
            shed: false,
            open: false,
            dispatch: Dispatch::Pool,
            compute: Compute::Inline,
            class_compute: Vec::new(),
            yield_every: 1,
            compute_threads: 0,
            warmup: Warmup::Jobs(0),
            end: End::Fed,
            classes: 1,
            credit_chunk: 1024,
            recycle_jobs: 0,
            max_restarts: 0,
            restart_window: Duration::from_secs(1),
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            probe_interval: Duration::from_millis(1),
            job_timeout: None,
            cpus: None,
            job_log: false,
            kill_jobs: Default::default(),
            remote: None,
            serve: None,
        }
    }
}

impl Config {
    /// Where the CPU step of a job of class `class` runs.
    #[inline]
    pub fn placement(&self, class: u32) -> Compute {
        self.class_compute
            .get(class as usize)
            .copied()
            .unwrap_or(self.compute)
    }

    /// Does the CPU step of any class run at `c`?
    pub fn places_on(&self, c: Compute) -> bool {
        if self.class_compute.is_empty() {
            self.compute == c
        } else {
            self.class_compute.contains(&c)
        }
    }
}

/// How a run's workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every job was run, shed or cancelled.
    Finished,
    /// The supervisor gave up (restart intensity exceeded).
    PoolFailed(String),
    /// A worker failed for a reason other than an injected crash.
    Internal(String),
}

/// What an engine reports about itself while it runs, for snapshots.
pub trait Probe: Send + Sync + std::fmt::Debug {
    /// Jobs waiting in its bounded queue(s).
    fn queue_depth(&self) -> u64;
    /// Its gauges, queue depth included.
    fn gauges(&self) -> proto::Gauges;
}

/// What an engine hands over once its run is under way.
pub(crate) struct Parts {
    /// Received jobs, to the engine's producers.
    pub feed: mpsc::UnboundedSender<Vec<Job>>,
    /// Credit the engine returns as it releases jobs.
    pub credit: mpsc::UnboundedReceiver<u64>,
    pub finished: oneshot::Receiver<Outcome>,
    pub recorder: Arc<Recorder>,
    pub buffers: Arc<Buffers>,
    pub probe: Arc<dyn Probe>,
    pub cancel: CancellationToken,
    /// The thread that owns the engine's runtime (or VM).
    pub thread: std::thread::JoinHandle<()>,
}

/// The handle the session keeps on a running workload.
#[derive(Debug)]
pub struct Workload {
    feed: Option<mpsc::UnboundedSender<Vec<Job>>>,
    pub credit: mpsc::UnboundedReceiver<u64>,
    pub finished: oneshot::Receiver<Outcome>,
    pub recorder: Arc<Recorder>,
    /// Cancelled when a timed run's measured part is over.
    pub stopped: CancellationToken,
    /// Emptied job buffers, for the next batch (`buffer`).
    pub(crate) buffers: Arc<Buffers>,
    probe: Arc<dyn Probe>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    /// A WebSocket server's port (0 otherwise).
    pub ws_port: u16,
}

impl Workload {
    /// The handle on a run an engine has started on `thread`.
    pub(crate) fn from_parts(parts: Parts) -> Self {
        Self {
            feed: Some(parts.feed),
            credit: parts.credit,
            finished: parts.finished,
            // Cancelled by the engine when the measured part of a timed run
            // is over.
            stopped: parts.recorder.span.stopped.clone(),
            recorder: parts.recorder,
            buffers: parts.buffers,
            probe: parts.probe,
            cancel: parts.cancel,
            thread: Some(parts.thread),
            ws_port: 0,
        }
    }

    /// An empty buffer for `n` received jobs (one the producers emptied,
    /// if there is one), to `feed` with them.
    pub fn buffer(&self, n: usize) -> Vec<Job> {
        self.buffers.take(n)
    }

    /// Hands received jobs to the producers.
    pub fn feed(&self, jobs: Vec<Job>) {
        if let Some(f) = &self.feed {
            // Fails only once producers are gone (cancelled): those jobs were
            // counted as received and must be counted as cancelled.
            if let Err(e) = f.send(jobs) {
                self.recorder
                    .cancelled
                    .fetch_add(e.0.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// No more jobs: producers finish what is buffered, then the pool drains.
    pub fn end_of_jobs(&mut self) {
        self.feed = None;
    }

    /// Stops the run: everything not yet done is counted as cancelled.
    pub fn cancel(&mut self) {
        self.cancel.cancel();
        self.feed = None;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Jobs waiting in the bounded queue(s).
    pub fn queue_depth(&self) -> u64 {
        self.probe.queue_depth()
    }

    /// The engine's gauges, for a snapshot.
    pub fn gauges(&self) -> proto::Gauges {
        self.probe.gauges()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.feed = None;
        if let Some(t) = self.thread.take() {
            // The runtime thread ends within the cancel bound; joining on
            // another thread keeps a server task from blocking on it.
            std::thread::spawn(move || {
                let _ = t.join();
            });
        }
    }
}
