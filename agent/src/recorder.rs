//! Where measurements land. Workers record into one of a few sharded
//! recorders (a shard per pair of workers would waste memory on histograms;
//! one shared lock would serialise the pool); the aggregator merges the
//! shards every snapshot interval into interval and whole-run histograms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cwbench::generator::Job;
use cwbench::histogram::{Hist, encode, new_hist, record};
use cwbench::proto;
use parking_lot::Mutex;

use crate::recovery::{BUCKET_US, Recovery};
use crate::span::Span;

/// Latency histograms of one class.
#[derive(Debug, Clone)]
pub struct ClassHists {
    pub completion: Hist,
    pub queue_wait: Hist,
    pub service: Hist,
    pub overshoot: Hist,
}

impl ClassHists {
    pub fn new() -> Self {
        Self {
            completion: new_hist(),
            queue_wait: new_hist(),
            service: new_hist(),
            overshoot: new_hist(),
        }
    }

    fn each_mut(&mut self) -> [&mut Hist; 4] {
        [
            &mut self.completion,
            &mut self.queue_wait,
            &mut self.service,
            &mut self.overshoot,
        ]
    }

    /// Adds `other` in and empties it (keeping its allocation).
    fn drain_from(&mut self, other: &mut ClassHists) {
        for (a, b) in self.each_mut().into_iter().zip(other.each_mut()) {
            // Both auto-resize, so add cannot fail on range.
            let _ = a.add(&*b);
            b.reset();
        }
    }

    fn add(&mut self, other: &ClassHists) {
        let _ = self.completion.add(&other.completion);
        let _ = self.queue_wait.add(&other.queue_wait);
        let _ = self.service.add(&other.service);
        let _ = self.overshoot.add(&other.overshoot);
    }

    pub fn is_empty(&self) -> bool {
        self.completion.is_empty()
    }

    pub fn to_proto(&self, class_id: u32) -> proto::ClassHistograms {
        proto::ClassHistograms {
            class_id,
            completion: encode(&self.completion),
            queue_wait: encode(&self.queue_wait),
            service: encode(&self.service),
            sleep_overshoot: encode(&self.overshoot),
        }
    }
}

impl Default for ClassHists {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ShardCounts {
    completed: u64,
    crashed: u64,
    measured_completed: u64,
    /// Completion time of the last measured job, µs since run start.
    last_measured_done_us: u64,
}

#[derive(Debug)]
struct Shard {
    classes: Vec<ClassHists>,
    counts: ShardCounts,
    restart: Hist,
    /// Completions per 10 ms bucket since `base_bucket` (for recovery).
    buckets: Vec<u32>,
    base_bucket: u64,
    /// Crash times, µs since start, since the last collect.
    faults: Vec<u64>,
}

/// A small number fixed for the calling thread, for a shard of its own:
/// task-per-job's job tasks record on whichever runtime thread ran them, so
/// the threads do not share one shard's lock. Numbers are handed out in
/// the order threads first ask; the shard is this modulo the shard count.
pub fn thread_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    INDEX.with(|i| *i)
}

/// Saturating microseconds between two instants.
#[inline]
pub fn us(from: Instant, to: Instant) -> u64 {
    let d = to.saturating_duration_since(from);
    // Cheaper than as_micros (no 128-bit division).
    d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
}

/// Saturating microseconds between two nanosecond readings.
#[inline]
pub fn us_ns(from: u64, to: u64) -> u64 {
    to.saturating_sub(from) / 1000
}

/// A completed job as a pool worker keeps it until its next flush
/// (`Recorder::flush`): the figures `Recorder::completed` would record.
#[derive(Debug, Clone, Copy)]
pub struct Completed {
    class: u32,
    measured: bool,
    done_us: u64,
    /// done_us / BUCKET_US, computed once.
    bucket: u64,
    completion: u64,
    queue_wait: u64,
    service: u64,
    /// u64::MAX: the job did not sleep.
    overshoot: u64,
}

/// A pool worker's completions not yet in its shard: equal consecutive
/// figures merged into one entry with a count.
#[derive(Debug)]
pub struct Local {
    buf: Vec<(Completed, u32)>,
}

impl Local {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// Entries held (merged runs count once).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Adds a completed job; returns its service time in µs.
    #[inline]
    pub fn push(&mut self, rec: &Recorder, job: &Job, t: &Timing) -> u64 {
        // Nothing before the run's start; origin <= pickup <= done.
        let s = rec.start_ns;
        let done = t.done.max(s);
        let pickup = t.pickup.max(s).min(done);
        let origin = t.origin.max(s).min(pickup);
        let c = Completed {
            class: job.class,
            measured: rec.is_measured(job, t.origin),
            done_us: (done - s) / 1000,
            bucket: (done - s) / 1000 / BUCKET_US,
            completion: (done - origin) / 1000,
            queue_wait: (pickup - origin) / 1000,
            service: (done - pickup) / 1000,
            overshoot: t.overshoot_us.unwrap_or(u64::MAX),
        };
        match self.buf.last_mut() {
            Some((last, n)) if last.same(&c) && *n < u32::MAX => {
                *n += 1;
                // Pushed out of done order (by a caller merging what others
                // report), the run still ends at its latest completion.
                last.done_us = last.done_us.max(c.done_us);
            }
            _ => self.buf.push((c, 1)),
        }
        c.service
    }
}

impl Completed {
    /// Equal figures, completions in the same 10 ms bucket (done_us may
    /// differ: the latest is kept).
    #[inline]
    fn same(&self, o: &Completed) -> bool {
        self.class == o.class
            && self.measured == o.measured
            && self.completion == o.completion
            && self.queue_wait == o.queue_wait
            && self.service == o.service
            && self.overshoot == o.overshoot
            && self.bucket == o.bucket
    }
}

/// Equal consecutive values of one histogram, recorded once (`record_n`).
#[derive(Debug, Default)]
struct Run {
    class: usize,
    value: u64,
    n: u64,
}

impl Run {
    #[inline]
    fn add(&mut self, class: usize, value: u64, k: u32, flush: impl FnOnce(usize, u64, u64)) {
        let k = u64::from(k);
        if self.n > 0 && self.class == class && self.value == value {
            self.n += k;
            return;
        }
        if self.n > 0 {
            flush(self.class, self.value, self.n);
        }
        *self = Run { class, value, n: k };
    }
}

#[inline]
fn record_n(h: &mut Hist, v: u64, n: u64) {
    if h.record_n(v, n).is_err() {
        h.saturating_record_n(v, n);
    }
}

/// Everything workers, producers and the session record during one run.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    start: Instant,
    /// `start` in nanoseconds on the agent's clock.
    start_ns: u64,
    /// Which jobs are measured.
    pub span: Arc<Span>,
    pub received: AtomicU64,
    pub released: AtomicU64,
    pub shed: AtomicU64,
    pub cancelled: AtomicU64,
    /// Timed runs: received, never released (the measured part was over).
    pub unreleased: AtomicU64,
    pub timed_out: AtomicU64,
    /// Jobs in flight outside pool workers (task-per-job, serial, the BEAM).
    pub in_flight: AtomicU64,
    /// Pool workers: 1 while the worker runs a job. A plain store on a line
    /// of the worker's own, where one shared counter took two atomic
    /// read-modify-writes per job on a line all workers write.
    busy: Box<[Busy]>,
    pub restarts: AtomicU64,
    pub feed_stall_us: AtomicU64,
    /// Scheduler lateness of the probe, since the last snapshot.
    lateness: Mutex<Hist>,
    /// Plan.job_log: per-job records since the last drain.
    job_log: Option<Mutex<proto::JobRecords>>,
    /// Release time of the first measured job, µs since start; MAX = not yet.
    first_measured_release_us: AtomicU64,
    /// What only WebSocket runs count (crate::ws).
    pub ws: WsRecord,
}

/// A WebSocket run's own figures: the client's losses and connections, the
/// task-set digest of both ends (docs/websocket.md).
#[derive(Debug)]
pub struct WsRecord {
    pub refused: AtomicU64,
    pub connection_lost: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Open connections now (a gauge).
    pub connections: AtomicU64,
    /// Server: connections it closed for what their client did (a bad or
    /// oversized message, answers left unread) or that vanished mid-task.
    pub dropped: AtomicU64,
    /// Tasks sent (client) or read (server).
    pub task_set: Mutex<cwbench::wsproto::TaskSet>,
    /// Connection set-up times, µs (client).
    pub connect: Mutex<Hist>,
}

impl Default for WsRecord {
    fn default() -> Self {
        Self {
            refused: AtomicU64::new(0),
            connection_lost: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            task_set: Mutex::default(),
            connect: Mutex::new(new_hist()),
        }
    }
}

/// A pool worker's in-flight flag, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Busy(AtomicU64);

impl Busy {
    #[inline]
    pub fn set(&self, busy: bool) {
        self.0.store(u64::from(busy), Ordering::Relaxed);
    }
}

/// A finished job's timestamps, nanoseconds on the agent's clock
/// (crate::clock::now_ns).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Latency origin: the enqueue attempt (closed loop) or the intended
    /// start (open loop).
    pub origin: u64,
    pub pickup: u64,
    pub done: u64,
    /// Actual minus requested sleep, µs (saturating), for jobs that slept.
    pub overshoot_us: Option<u64>,
}

impl Recorder {
    pub fn new(
        shards: usize,
        classes: usize,
        span: Arc<Span>,
        start: Instant,
        job_log: bool,
    ) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| {
                    Mutex::new(Shard {
                        classes: (0..classes).map(|_| ClassHists::new()).collect(),
                        counts: ShardCounts::default(),
                        restart: new_hist(),
                        buckets: Vec::new(),
                        base_bucket: 0,
                        faults: Vec::new(),
                    })
                })
                .collect(),
            start,
            start_ns: crate::clock::ns_of(start),
            span,
            received: AtomicU64::new(0),
            released: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            unreleased: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            busy: Box::default(),
            restarts: AtomicU64::new(0),
            feed_stall_us: AtomicU64::new(0),
            lateness: Mutex::new(new_hist()),
            job_log: job_log.then(|| Mutex::new(proto::JobRecords::default())),
            first_measured_release_us: AtomicU64::new(u64::MAX),
            ws: WsRecord::default(),
        }
    }

    /// One in-flight flag per pool worker (`busy`).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.busy = (0..workers).map(|_| Busy::default()).collect();
        self
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Pool worker `i`'s in-flight flag.
    #[inline]
    pub fn busy(&self, i: usize) -> &Busy {
        &self.busy[i]
    }

    /// Jobs being run now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
            + self
                .busy
                .iter()
                .map(|b| b.0.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// Is `job`, whose latency origin is `origin` (ns), measured?
    #[inline]
    pub fn is_measured(&self, job: &Job, origin: u64) -> bool {
        self.span.is_measured(job, origin)
    }

    fn shard(&self, worker: usize) -> &Mutex<Shard> {
        &self.shards[worker % self.shards.len()]
    }

    /// A producer released `job` (latency origin `origin`) into the queue at
    /// `at` (both ns).
    #[inline]
    pub fn released(&self, job: &Job, origin: u64, at: u64) {
        if self.is_measured(job, origin) {
            let at = us_ns(self.start_ns, at);
            // A load first: after the first, releases are rarely earlier.
            if at < self.first_measured_release_us.load(Ordering::Relaxed) {
                self.first_measured_release_us
                    .fetch_min(at, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    pub fn completed(&self, worker: usize, job: &Job, t: &Timing) {
        let measured = self.is_measured(job, t.origin);
        let done_us = us_ns(self.start_ns, t.done);
        let mut s = self.shard(worker).lock();
        s.counts.completed += 1;
        // Completions that land just before a collect moved the base count
        // in the oldest bucket kept.
        let i = (done_us / BUCKET_US).saturating_sub(s.base_bucket) as usize;
        if i >= s.buckets.len() {
            s.buckets.resize(i + 1, 0);
        }
        s.buckets[i] += 1;
        if !measured {
            return;
        }
        s.counts.measured_completed += 1;
        if done_us > s.counts.last_measured_done_us {
            s.counts.last_measured_done_us = done_us;
        }
        let h = &mut s.classes[job.class as usize];
        record(&mut h.completion, us_ns(t.origin, t.done));
        record(&mut h.queue_wait, us_ns(t.origin, t.pickup));
        record(&mut h.service, us_ns(t.pickup, t.done));
        if let Some(o) = t.overshoot_us {
            record(&mut h.overshoot, o);
        }
    }

    /// Records a worker's buffered completions under one lock of its shard,
    /// equal consecutive values as one record each; empties `buf`.
    pub fn flush(&self, worker: usize, local: &mut Local) {
        let buf = &mut local.buf;
        if buf.is_empty() {
            return;
        }
        let mut guard = self.shard(worker).lock();
        let s = &mut *guard;
        let mut bucket: Option<(usize, u32)> = None;
        let mut runs: [Run; 4] = Default::default();
        for (d, k) in buf.drain(..) {
            s.counts.completed += u64::from(k);
            let i = (d.done_us / BUCKET_US).saturating_sub(s.base_bucket) as usize;
            match &mut bucket {
                Some((b, n)) if *b == i => *n += k,
                _ => {
                    if let Some((b, n)) = bucket {
                        add_bucket(&mut s.buckets, b, n);
                    }
                    bucket = Some((i, k));
                }
            }
            if !d.measured {
                continue;
            }
            s.counts.measured_completed += u64::from(k);
            if d.done_us > s.counts.last_measured_done_us {
                s.counts.last_measured_done_us = d.done_us;
            }
            let c = d.class as usize;
            let classes = &mut s.classes;
            runs[0].add(c, d.completion, k, |c, v, n| {
                record_n(&mut classes[c].completion, v, n)
            });
            runs[1].add(c, d.queue_wait, k, |c, v, n| {
                record_n(&mut classes[c].queue_wait, v, n)
            });
            runs[2].add(c, d.service, k, |c, v, n| {
                record_n(&mut classes[c].service, v, n)
            });
            if d.overshoot != u64::MAX {
                runs[3].add(c, d.overshoot, k, |c, v, n| {
                    record_n(&mut classes[c].overshoot, v, n)
                });
            }
        }
        if let Some((b, n)) = bucket {
            add_bucket(&mut s.buckets, b, n);
        }
        for (k, r) in runs.iter().enumerate() {
            if r.n > 0 {
                let h = &mut s.classes[r.class];
                let h = match k {
                    0 => &mut h.completion,
                    1 => &mut h.queue_wait,
                    2 => &mut h.service,
                    _ => &mut h.overshoot,
                };
                record_n(h, r.value, r.n);
            }
        }
    }

    /// A job crashed its worker at `at` (ns).
    pub fn crashed(&self, worker: usize, at: u64) {
        let at = us_ns(self.start_ns, at);
        let mut s = self.shard(worker).lock();
        s.counts.crashed += 1;
        s.faults.push(at);
    }

    /// Logs one job's timestamps, ns (Plan.job_log only). Outcome: 0
    /// completed, 1 crashed, 2 timed out.
    #[inline(always)]
    pub fn log_job(&self, job: &Job, origin: u64, start: u64, end: u64, outcome: u32) {
        if let Some(log) = &self.job_log {
            let mut l = log.lock();
            l.ids.push(job.id);
            l.class_ids.push(job.class);
            l.origin_us.push(us_ns(self.start_ns, origin));
            l.start_us.push(us_ns(self.start_ns, start));
            l.end_us.push(us_ns(self.start_ns, end));
            l.outcomes.push(outcome);
        }
    }

    /// Takes the job records logged so far (None when not logging or empty).
    pub fn take_job_log(&self) -> Option<proto::JobRecords> {
        let log = self.job_log.as_ref()?;
        let mut l = log.lock();
        if l.ids.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut *l))
    }

    /// One wake of the lateness probe.
    pub fn lateness(&self, d: Duration) {
        record(&mut self.lateness.lock(), d.as_micros() as u64);
    }

    pub fn restart_latency(&self, worker: usize, d: Duration) {
        record(&mut self.shard(worker).lock().restart, d.as_micros() as u64);
    }

    fn counters(&self, c: ShardCounts) -> proto::Counters {
        proto::Counters {
            received: self.received.load(Ordering::Relaxed),
            completed: c.completed,
            crashed: c.crashed,
            timed_out: self.timed_out.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            unreleased: self.unreleased.load(Ordering::Relaxed),
            measured_completed: c.measured_completed,
            feed_stall_us: self.feed_stall_us.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            refused: self.ws.refused.load(Ordering::Relaxed),
            connection_lost: self.ws.connection_lost.load(Ordering::Relaxed),
            reconnects: self.ws.reconnects.load(Ordering::Relaxed),
            connect_failed: self.ws.connect_failed.load(Ordering::Relaxed),
        }
    }
}

fn add_bucket(buckets: &mut Vec<u32>, i: usize, n: u32) {
    if i >= buckets.len() {
        buckets.resize(i + 1, 0);
    }
    buckets[i] += n;
}

/// Turns the recorder's shards into numbered snapshots and the final Done.
#[derive(Debug)]
pub struct Aggregator {
    whole: Vec<ClassHists>,
    interval: Vec<ClassHists>,
    restart: Hist,
    lateness: Hist,
    lateness_whole: Hist,
    seq: u64,
    last_us: u64,
    last_counts: ShardCounts,
    recovery: Recovery,
    /// The process's CPU time (user, system µs) when the run started: every
    /// CPU figure is the run's own, not what earlier runs spent.
    cpu_at_start: (u64, u64),
}

impl Aggregator {
    pub fn new(classes: usize, recovery: crate::recovery::Params) -> Self {
        Self {
            recovery: Recovery::new(recovery),
            whole: (0..classes).map(|_| ClassHists::new()).collect(),
            interval: (0..classes).map(|_| ClassHists::new()).collect(),
            restart: new_hist(),
            lateness: new_hist(),
            lateness_whole: new_hist(),
            seq: 0,
            last_us: 0,
            last_counts: ShardCounts::default(),
            cpu_at_start: cwbench::sysinfo::cpu_times_us(),
        }
    }

    fn collect(&mut self, rec: &Recorder, last: bool) {
        let mut c = ShardCounts::default();
        let now_bucket = us(rec.start, crate::clock::now()) / BUCKET_US;
        let mut faults = Vec::new();
        for shard in &rec.shards {
            let mut s = shard.lock();
            self.recovery.add_completions(s.base_bucket, &s.buckets);
            s.buckets.clear();
            s.base_bucket = now_bucket;
            faults.append(&mut s.faults);
            for (into, from) in self.interval.iter_mut().zip(s.classes.iter_mut()) {
                into.drain_from(from);
            }
            let _ = self.restart.add(&s.restart);
            s.restart.reset();
            c.completed += s.counts.completed;
            c.crashed += s.counts.crashed;
            c.measured_completed += s.counts.measured_completed;
            c.last_measured_done_us = c.last_measured_done_us.max(s.counts.last_measured_done_us);
        }
        faults.sort_unstable();
        for f in faults {
            self.recovery.add_fault(f);
        }
        self.recovery.evaluate(now_bucket, last);
        self.last_counts = c;
        {
            let mut l = rec.lateness.lock();
            let _ = self.lateness.add(&*l);
            let _ = self.lateness_whole.add(&*l);
            l.reset();
        }
        for (w, i) in self.whole.iter_mut().zip(&self.interval) {
            w.add(i);
        }
    }

    /// The next interval snapshot (also folds it into the whole-run totals).
    /// `gauges` carries what only the caller can read (queue depth, runtime
    /// metrics); process figures are filled in here.
    pub fn snapshot(&mut self, rec: &Recorder, gauges: proto::Gauges) -> proto::Snapshot {
        self.collect(rec, false);
        let now_us = us(rec.start, crate::clock::now());
        let classes = self
            .interval
            .iter_mut()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| {
                let p = h.to_proto(i as u32);
                for x in h.each_mut() {
                    x.reset();
                }
                p
            })
            .collect();
        let received = rec.received.load(Ordering::Relaxed);
        let released = rec.released.load(Ordering::Relaxed);
        let (cpu_user_us, cpu_system_us) = cwbench::sysinfo::cpu_times_us();
        let snap = proto::Snapshot {
            seq: self.seq,
            elapsed_us: now_us,
            interval_us: now_us - self.last_us,
            counters: Some(rec.counters(self.last_counts)),
            gauges: Some(proto::Gauges {
                in_flight: rec.in_flight(),
                prefetch_depth: received.saturating_sub(released),
                // The caller's figures are those of a runtime in a child
                // process (the BEAM), if any: the agent's own are added.
                rss_bytes: cwbench::sysinfo::rss_bytes() + gauges.rss_bytes,
                connections: rec.ws.connections.load(Ordering::Relaxed),
                cpu_user_us: cpu_user_us.saturating_sub(self.cpu_at_start.0) + gauges.cpu_user_us,
                cpu_system_us: cpu_system_us.saturating_sub(self.cpu_at_start.1)
                    + gauges.cpu_system_us,
                ..gauges
            }),
            classes,
            lateness: encode(&self.lateness),
        };
        self.lateness.reset();
        self.seq += 1;
        self.last_us = now_us;
        snap
    }

    /// Final totals; call after the last snapshot, once the pool has stopped.
    pub fn done(&mut self, rec: &Recorder, digest: u64) -> proto::Done {
        self.collect(rec, true);
        let r = &self.recovery;
        let first = rec.first_measured_release_us.load(Ordering::Relaxed);
        let window = if first == u64::MAX {
            0
        } else {
            self.last_counts.last_measured_done_us.saturating_sub(first)
        };
        let tasks = *rec.ws.task_set.lock();
        proto::Done {
            totals: Some(rec.counters(self.last_counts)),
            classes: self
                .whole
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.is_empty())
                .map(|(i, h)| h.to_proto(i as u32))
                .collect(),
            digest,
            measured_window_us: window,
            snapshots: self.seq,
            restart_latency: encode(&self.restart),
            elapsed_us: us(rec.start, crate::clock::now()),
            lateness: encode(&self.lateness_whole),
            recovery: encode(&r.intervals),
            faults: r
                .marks
                .len()
                .max((r.intervals.len() + r.unrecovered + r.no_baseline + r.no_dip) as usize)
                as u64,
            unrecovered: r.unrecovered,
            no_baseline: r.no_baseline,
            no_dip: r.no_dip,
            marks: r
                .marks
                .iter()
                .map(|&(at_us, recovery_us)| proto::FaultMark { at_us, recovery_us })
                .collect(),
            task_set: tasks.sum,
            task_count: tasks.count,
            connect: encode(&rec.ws.connect.lock()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warmup(jobs: u64) -> Arc<Span> {
        Arc::new(Span::new(
            crate::span::Warmup::Jobs(jobs),
            crate::span::End::Fed,
        ))
    }

    /// A worker's merged local buffer records exactly what per-job
    /// `completed` calls record: every job, every value.
    #[test]
    fn local_runs_record_the_same_as_one_by_one() {
        let start = crate::clock::now();
        let s = crate::clock::ns_of(start);
        // Sub-µs parts too: the µs figures are floors of ns differences.
        let at = |us: u64| s + us * 1000 + us * 7919 % 1000;
        let (a, b) = (
            Recorder::new(1, 2, warmup(3), start, false),
            Recorder::new(1, 2, warmup(3), start, false),
        );
        let mut local = Local::with_capacity(8);
        let mut done = 10;
        for k in 0..200u64 {
            let job = Job {
                id: k,
                class: (k / 50 % 2) as u32,
                ..Job::default()
            };
            let origin = at(k / 7 * 7);
            let pickup = at(done);
            done += k % 3 / 2 * 15_000;
            let t = Timing {
                origin,
                pickup,
                done: at(done),
                overshoot_us: (k % 5 == 0).then_some(3),
            };
            a.completed(0, &job, &t);
            local.push(&b, &job, &t);
            if local.len() >= 8 {
                b.flush(0, &mut local);
            }
        }
        b.flush(0, &mut local);
        assert!(local.is_empty());
        let (sa, sb) = (a.shards[0].lock(), b.shards[0].lock());
        assert_eq!(sa.counts.completed, 200);
        assert_eq!(sa.counts.completed, sb.counts.completed);
        assert_eq!(sa.counts.measured_completed, sb.counts.measured_completed);
        assert_eq!(
            sa.counts.last_measured_done_us,
            sb.counts.last_measured_done_us
        );
        assert_eq!(sa.buckets, sb.buckets);
        for (x, y) in sa.classes.iter().zip(&sb.classes) {
            assert_eq!(x.completion, y.completion);
            assert_eq!(x.queue_wait, y.queue_wait);
            assert_eq!(x.service, y.service);
            assert_eq!(x.overshoot, y.overshoot);
        }
        assert_eq!(
            sa.classes[0].completion.len() + sa.classes[1].completion.len(),
            197
        );
    }

    /// Completions merged out of done order: a merged run keeps the latest
    /// completion, as one-by-one recording does.
    #[test]
    fn merged_completions_out_of_done_order_keep_the_latest() {
        let start = crate::clock::now();
        let s = crate::clock::ns_of(start);
        let (a, b) = (
            Recorder::new(1, 1, warmup(0), start, false),
            Recorder::new(1, 1, warmup(0), start, false),
        );
        let mut local = Local::with_capacity(8);
        // Equal figures (10 µs waiting, 20 µs running), 500 µs apart, in
        // one 10 ms bucket: the later one arrives first.
        for (id, at) in [(1u64, 2_500u64), (0, 2_000)] {
            let job = Job {
                id,
                ..Job::default()
            };
            let t = Timing {
                origin: s + at * 1000,
                pickup: s + (at + 10) * 1000,
                done: s + (at + 30) * 1000,
                overshoot_us: None,
            };
            a.completed(0, &job, &t);
            local.push(&b, &job, &t);
        }
        assert_eq!(local.len(), 1);
        b.flush(0, &mut local);
        let (sa, sb) = (a.shards[0].lock(), b.shards[0].lock());
        assert_eq!(sa.counts.last_measured_done_us, 2_530);
        assert_eq!(sb.counts.last_measured_done_us, 2_530);
        assert_eq!(sa.buckets, sb.buckets);
    }
}
