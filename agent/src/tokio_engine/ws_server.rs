//! The tokio engine's job execution lent to the WebSocket task server (`crate::ws::server`): a task run in each handler architecture, its ending counted as the engine counts a job's.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cwbench::generator::Job;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::*;

/// How a task ended on the server. Timestamps: ns, agent clock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ran {
    Completed(Timing),
    /// Its injected crash ran (or, a bug, it panicked otherwise).
    Crashed {
        pickup: u64,
        at: u64,
    },
    TimedOut {
        pickup: u64,
        at: u64,
    },
    /// The run was cancelled: counted, never answered.
    Cancelled,
}

/// The tokio engine's context for the server's handlers: configuration,
/// recorder, cancellation, compute pool. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Jobs {
    ctx: Arc<Ctx>,
    /// A panic that was not an injected crash: the run's outcome.
    failure: Arc<Mutex<Option<String>>>,
}

impl Jobs {
    /// The engine's context for a server with no queues, no producers and
    /// no pool workers: handlers run the jobs themselves.
    pub(crate) fn new(cfg: Config, rec: Arc<Recorder>) -> Result<Self, String> {
        install_panic_hook();
        let compute_pool = super::compute_pool(&cfg)?;
        // Receiver dropped at once: nothing here sends kills.
        let (kill, _) = mpsc::unbounded_channel();
        let ctx = Ctx {
            cfg,
            rec,
            queues: Vec::new(),
            cancel: CancellationToken::new(),
            rr: AtomicUsize::new(0),
            in_flight: Arc::new(Semaphore::new(0)),
            compute_pool,
            t0: OnceLock::new(),
            kill,
            stopped: Arc::default(),
            buffers: Arc::new(Buffers::new(0)),
            remote: OnceLock::new(),
        };
        Ok(Self {
            ctx: Arc::new(ctx),
            failure: Arc::default(),
        })
    }

    pub(crate) fn cfg(&self) -> &Config {
        &self.ctx.cfg
    }

    pub(crate) fn rec(&self) -> &Arc<Recorder> {
        &self.ctx.rec
    }

    /// Cancelled when the run stops at once.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.ctx.cancel
    }

    /// The first task arrived at `t` (ns): a timed warm-up starts now.
    pub(crate) fn begin(&self, t: u64) {
        self.ctx.t0.get_or_init(|| {
            self.ctx.rec.span.begin(t);
            t
        });
    }

    /// Serial: the handler awaits the job fn itself; an injected crash
    /// unwinds to here and the handler goes on (its own supervisor).
    pub(crate) async fn serial(&self, shard: usize, job: &Job, origin: u64) -> Ran {
        let pickup = crate::clock::now_ns();
        let r = AssertUnwindSafe(run_job(&self.ctx, shard, job, origin, pickup))
            .catch_unwind()
            .await;
        self.settle(shard, job, pickup, r, true)
    }

    /// Spawn-await: the job in a task of its own, awaited; a crash comes
    /// back as the task's panic.
    pub(crate) async fn spawn_await(&self, shard: usize, job: Job, origin: u64) -> Ran {
        // Written by the task as it starts: a crashed task returns nothing.
        let started = Arc::new(AtomicU64::new(origin));
        let (ctx, s) = (self.ctx.clone(), started.clone());
        let h: JoinHandle<Option<Timing>> = tokio::spawn(async move {
            let pickup = crate::clock::now_ns();
            s.store(pickup, Ordering::Relaxed);
            run_job(&ctx, shard, &job, origin, pickup).await
        });
        let r = h.await.map_err(|e| {
            if e.is_panic() {
                e.into_panic()
            } else {
                Box::new("job task cancelled") as Box<dyn Any + Send>
            }
        });
        self.settle(shard, &job, started.load(Ordering::Relaxed), r, true)
    }

    /// Task-per-job: the job as a future to spawn; it hands its ending to
    /// `reply` (the connection's channel) whether or not anyone still
    /// listens, so a task outlives a lost connection and is counted.
    pub(crate) fn task(
        &self,
        shard: usize,
        job: Job,
        origin: u64,
        reply: impl FnOnce(Ran) + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let ctx = &this.ctx;
            let pickup = crate::clock::now_ns();
            let r = if never_awaits(&ctx.cfg, &job) {
                let n = &ctx.rec.in_flight;
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    run_now(ctx, |on| in_flight(n, on), shard, &job, origin, pickup)
                }))
            } else {
                // Boxed, as the engine's job tasks: run_job's state is large.
                AssertUnwindSafe(Box::pin(run_job(ctx, shard, &job, origin, pickup)))
                    .catch_unwind()
                    .await
            };
            reply(this.settle(shard, &job, pickup, r, false));
        }
    }

    /// Records how a task ended, as the engine records an awaited job
    /// (`after_awaited`); `restart`: the handler that ran it goes on.
    fn settle(
        &self,
        shard: usize,
        job: &Job,
        pickup: u64,
        r: Result<Option<Timing>, Box<dyn Any + Send>>,
        restart: bool,
    ) -> Ran {
        let rec = &self.ctx.rec;
        match r {
            Ok(Some(t)) => {
                rec.completed(shard, job, &t);
                Ran::Completed(t)
            }
            // run_job counted it, cancelled or timed out: only a cancel
            // stops a job that is not past its deadline.
            Ok(None) if self.ctx.cancel.is_cancelled() => Ran::Cancelled,
            Ok(None) => Ran::TimedOut {
                pickup,
                at: crate::clock::now_ns(),
            },
            Err(p) => match p.downcast_ref::<InjectedCrash>() {
                Some(c) => {
                    if restart {
                        rec.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    Ran::Crashed { pickup, at: c.at }
                }
                None => self.bug(shard, job, &p, pickup),
            },
        }
    }

    /// A panic that was not injected: counted so nothing is lost, and the
    /// run stops with it as the reason.
    #[cold]
    fn bug(&self, shard: usize, job: &Job, p: &Box<dyn Any + Send>, pickup: u64) -> Ran {
        let msg = format!("task {} panicked: {}", job.id, panic_message(p));
        tracing::error!("{msg}");
        let at = crate::clock::now_ns();
        self.ctx.rec.crashed(shard, at);
        self.failure.lock().get_or_insert(msg);
        self.ctx.cancel.cancel();
        Ran::Crashed { pickup, at }
    }

    /// Starts the scheduler-lateness probe (and the flag `run_job` checks
    /// for a cancel) on the current runtime; stop it with `stop`.
    pub(crate) fn start_probe(&self) -> (CancellationToken, JoinHandle<()>) {
        let (token, flag) = (self.ctx.cancel.clone(), self.ctx.stopped.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            flag.store(true, Ordering::Release);
        });
        let stop = CancellationToken::new();
        (stop.clone(), tokio::spawn(probe(self.ctx.clone(), stop)))
    }

    /// The end: the compute pool's threads stop; how the run ended.
    pub(crate) fn finish(&self) -> Outcome {
        if let Some(p) = &self.ctx.compute_pool {
            p.close();
        }
        match self.failure.lock().take() {
            Some(m) => Outcome::Internal(m),
            None => Outcome::Finished,
        }
    }
}

/// The server's gauges: the runtime's stable metrics (connections and
/// tasks in flight come from the recorder).
pub(crate) fn server_probe(runtime: tokio::runtime::Handle) -> Arc<dyn Probe> {
    Arc::new(TokioProbe {
        queues: Vec::new(),
        runtime,
    })
}
