//! The queue's semantics under random operations: a sequential model test
//! (every take's item and latency origin, the bound, the gate, close and
//! drain, against a plain reference model) and a concurrent stress test
//! (every job exactly once, FIFO per consumer, exact accounting, no lost
//! wake-up). Seeded and bounded in time, so they run in every `cargo test`.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{Gate, Queue};

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the queue should do, written as plainly as possible: a queue of at
/// most `cap` (item, origin) and the producer's hand behind it.
struct Model {
    cap: usize,
    queue: VecDeque<(u64, u64)>,
    hand: VecDeque<u64>,
    hand_since: u64,
    refused: usize,
    closed: bool,
    /// Gate: released while the origin is below this (None: no gate).
    end: Option<u64>,
}

impl Model {
    fn admits(&self, origin: u64) -> bool {
        self.end.is_none_or(|e| origin < e)
    }

    /// send_all's first poll: the chunk enters the queue or the hand.
    fn send_all(&mut self, chunk: &[u64], now: u64) {
        for (i, &x) in chunk.iter().enumerate() {
            if self.queue.len() < self.cap {
                if !self.admits(now) {
                    self.refused += chunk.len() - i;
                    return;
                }
                self.queue.push_back((x, now));
            } else {
                if self.hand.is_empty() {
                    // The job before it got in just now.
                    self.hand_since = now;
                }
                self.hand.push_back(x);
            }
        }
    }

    /// One take at `now`: the front, and the hand's first into the slot.
    fn take(&mut self, now: u64) -> Option<(u64, u64)> {
        let front = self.queue.pop_front()?;
        if let Some(&x) = self.hand.front() {
            let since = std::mem::replace(&mut self.hand_since, now);
            if self.admits(since) {
                self.hand.pop_front();
                self.queue.push_back((x, since));
            } else {
                self.refused += self.hand.len();
                self.hand.clear();
            }
        }
        Some(front)
    }

    fn take_many(&mut self, now: u64, max: usize, light: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let Some(first) = self.take(now) else {
            return out;
        };
        out.push(first);
        if light(first.0) {
            while out.len() < max && self.queue.front().is_some_and(|x| light(x.0)) {
                out.extend(self.take(now));
            }
        }
        out
    }
}

type SendAll = Pin<Box<dyn Future<Output = Result<usize, usize>>>>;

fn poll(f: &mut SendAll) -> Option<Result<usize, usize>> {
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// One random history against the model; every answer compared.
fn model_run(seed: u64) {
    let mut rng = Rng(seed | 1);
    let cap = 1 + rng.below(6) as usize;
    let end = (rng.below(3) == 0).then(|| 200 + rng.below(400));
    let q = Arc::new(match end {
        Some(e) => Queue::with_gate(cap, Box::new(move |_: &u64, o: u64| o < e) as Gate<u64>),
        None => Queue::new(cap),
    });
    let mut m = Model {
        cap,
        queue: VecDeque::new(),
        hand: VecDeque::new(),
        hand_since: 0,
        refused: 0,
        closed: false,
        end,
    };
    let light_mod = 1 + rng.below(4);
    let light = move |x: u64| !x.is_multiple_of(light_mod);
    let mut pending: Option<SendAll> = None;
    let mut next_id = 0u64;
    for now in 1..=600u64 {
        match rng.below(10) {
            0..=2 if pending.is_none() => {
                let n = rng.below(3 * cap as u64 + 2);
                let chunk: Vec<u64> = (next_id..next_id + n).collect();
                next_id += n;
                if !m.closed {
                    m.send_all(&chunk, now);
                }
                let q2 = q.clone();
                pending = Some(Box::pin(async move {
                    let mut c = chunk;
                    let r = q2.send_all(&mut c, now).await;
                    assert!(c.is_empty());
                    r
                }));
            }
            3 => {
                let got = q.try_recv(now);
                assert_eq!(got, m.take(now), "seed {seed} step {now}: try_recv");
            }
            9 if rng.below(40) == 0 => {
                q.close();
                m.closed = true;
            }
            _ => {
                let max = 1 + rng.below(5) as usize;
                let mut more = VecDeque::new();
                let got: Vec<_> = q
                    .try_recv_many(now, max, &mut more, |x| light(*x))
                    .into_iter()
                    .chain(more)
                    .collect();
                let want = m.take_many(now, max, light);
                assert_eq!(got, want, "seed {seed} step {now}: try_recv_many({max})");
            }
        }
        if let Some(f) = &mut pending {
            let closed_with_hand = m.closed && !m.hand.is_empty();
            match poll(f) {
                Some(Ok(r)) => {
                    assert!(
                        m.hand.is_empty(),
                        "seed {seed} step {now}: done with a hand"
                    );
                    assert_eq!(r, std::mem::take(&mut m.refused), "seed {seed}: refused");
                    pending = None;
                }
                Some(Err(left)) => {
                    assert!(m.closed, "seed {seed} step {now}: Err while open");
                    let want = if closed_with_hand {
                        m.hand.len()
                    } else {
                        // Closed before the chunk came: all of it.
                        left
                    };
                    assert_eq!(left, want, "seed {seed} step {now}: never queued");
                    m.hand.clear();
                    pending = None;
                }
                None => assert!(
                    !m.hand.is_empty() && !m.closed,
                    "seed {seed} step {now}: waits with an empty hand"
                ),
            }
        }
        // The bound: the queue never holds more than cap.
        assert_eq!(q.len(), m.queue.len(), "seed {seed} step {now}: len");
        assert!(m.queue.len() <= cap);
    }
    drop(pending);
    let (left, refused) = q.drain();
    let mut want: Vec<u64> = m.queue.iter().map(|x| x.0).collect();
    want.extend(m.hand.iter());
    assert_eq!(left, want, "seed {seed}: drain");
    assert_eq!(refused, m.refused, "seed {seed}: drain's refused");
}

#[test]
fn random_histories_match_the_model() {
    for seed in 0..3_000u64 {
        model_run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}

/// Several consumers claiming (one by one, in batches, or waiting) from one
/// producer's chunks, a timed-run gate, a close at a random moment: every
/// job is taken exactly once, in queue order by each consumer, or counted
/// as refused, never queued or drained; nothing hangs.
fn stress_run(seed: u64, rt: &tokio::runtime::Runtime) {
    let mut rng = Rng(seed | 1);
    let cap = 1 + rng.below(16) as usize;
    let consumers = 1 + rng.below(6) as usize;
    let chunks = 20 + rng.below(60);
    let gate_at = (rng.below(3) == 0).then(|| 100 + rng.below(3_000));
    // The gate counts attempts as a logical clock: its "time" is the origin.
    let clock = Arc::new(AtomicU64::new(1));
    let q = Arc::new(match gate_at {
        Some(e) => Queue::with_gate(cap, Box::new(move |_: &u64, o: u64| o < e) as Gate<u64>),
        None => Queue::new(cap),
    });
    let close_after = (rng.below(4) == 0).then(|| rng.below(chunks));
    let taken = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..consumers {
            let (q, clock, taken) = (q.clone(), clock.clone(), taken.clone());
            let max = 1 + (seed as usize + c) % 8;
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let mut more = VecDeque::new();
                loop {
                    let now = clock.fetch_add(1, Ordering::Relaxed);
                    if let Some(x) = q.try_recv_many(now, max, &mut more, |x| !x.is_multiple_of(5))
                    {
                        got.push(x.0);
                        got.extend(more.drain(..).map(|x| x.0));
                        if got.len().is_multiple_of(7) {
                            tokio::task::yield_now().await;
                        }
                        continue;
                    }
                    match q.recv().await {
                        Some((x, _, _)) => got.push(x),
                        None => break,
                    }
                }
                taken.fetch_add(got.len(), Ordering::Relaxed);
                got
            }));
        }
        let (mut sent, mut refused, mut never) = (0u64, 0usize, 0usize);
        for k in 0..chunks {
            if close_after == Some(k) {
                q.close();
            }
            let n = rng.below(4 * cap as u64 + 3);
            let mut chunk: Vec<u64> = (sent..sent + n).collect();
            sent += n;
            let now = clock.fetch_add(1, Ordering::Relaxed);
            let r = tokio::time::timeout(Duration::from_secs(10), q.send_all(&mut chunk, now))
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: send_all hung"));
            match r {
                Ok(k) => refused += k,
                Err(k) => never += k,
            }
        }
        q.close();
        let mut all = Vec::new();
        for t in tasks {
            let got = tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: a consumer hung"))
                .unwrap();
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: out of order"
            );
            all.extend(got);
        }
        let (left, late_refused) = q.drain();
        assert!(left.is_empty(), "seed {seed}: left after close and drain");
        let ids: HashSet<u64> = all.iter().copied().collect();
        assert_eq!(ids.len(), all.len(), "seed {seed}: a job taken twice");
        assert_eq!(
            all.len() + refused + late_refused + never,
            sent as usize,
            "seed {seed}: accounting"
        );
        assert_eq!(taken.load(Ordering::Relaxed), all.len());
    });
}

#[test]
fn concurrent_claims_take_every_job_once_and_in_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut seed = 0x5eed_u64;
    // Bounded in time: as many random runs as fit in 5 s (at least 50).
    for i in 0.. {
        if i >= 50 && t0.elapsed() > Duration::from_secs(5) {
            break;
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        stress_run(seed, &rt);
    }
}
