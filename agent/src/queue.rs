//! The bounded job queue: multi-producer, multi-consumer, capacity counted in
//! jobs. Each job goes to whichever consumer asks first (FIFO among waiters).
//!
//! Built for chunks: a closed-loop producer hands over a whole chunk at once
//! (`send_all`). What fits is queued; the rest waits in the producer's hand
//! (the *hand*, outside the bound, like the one job a blocked producer
//! holds) and enters the queue one job per freed slot, at the moment the slot
//! frees, stamped with the moment its enqueue attempt began. So the bound
//! still holds in jobs, each job still goes to whichever consumer is free,
//! and the producer wakes once per chunk instead of once per job.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug)]
struct Inner<T> {
    /// The queue — the first `cap` entries at most — then the producer's
    /// hand, in order, in one deque: a job leaves the hand for the queue by
    /// the queue's front moving on, so it is never moved between containers.
    /// Each entry carries its latency origin (ns, agent clock); a hand job's
    /// is set as it enters the queue.
    buf: VecDeque<(T, u64)>,
    /// When the hand's first job began its attempt (when the job before it
    /// got into the queue). Meaningful only while the hand is not empty.
    hand_since: u64,
    closed: bool,
    /// Jobs of the hand the gate refused, not yet reported to the producer.
    refused: usize,
    /// Consumers parked on `items` and not yet notified.
    consumers_waiting: usize,
    /// Producers parked on `space` and not yet notified.
    producers_waiting: usize,
    /// Slots freed by the take under way (reset by `wake_producer`).
    freed: usize,
}

/// Decides, as a job enters the queue with its latency origin (ns), whether
/// it is released at all (a timed run's end: `Span::admit`). False: neither
/// it nor the rest of the producer's hand is ever queued.
pub type Gate<T> = Box<dyn Fn(&T, u64) -> bool + Send + Sync>;

/// A bounded MPMC queue.
pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    cap: usize,
    items: Notify,
    space: Notify,
    gate: Option<Gate<T>>,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("cap", &self.cap)
            .field("gated", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Queue<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                buf: VecDeque::with_capacity(cap.min(1 << 16)),
                hand_since: 0,
                refused: 0,
                closed: false,
                consumers_waiting: 0,
                producers_waiting: 0,
                freed: 0,
            }),
            cap: cap.max(1),
            items: Notify::new(),
            space: Notify::new(),
            gate: None,
        }
    }

    /// A queue whose `send_all` jobs pass `gate` as they enter.
    pub fn with_gate(cap: usize, gate: Gate<T>) -> Self {
        Self {
            gate: Some(gate),
            ..Self::new(cap)
        }
    }

    fn wake_consumers(&self, inner: &mut Inner<T>, n: usize) {
        let k = n.min(inner.consumers_waiting);
        inner.consumers_waiting -= k;
        for _ in 0..k {
            self.items.notify_one();
        }
    }

    /// Waits for a free slot, then enqueues `item` with its latency origin.
    /// Returns the item back if the queue was closed.
    pub async fn send(&self, item: T, origin: u64) -> Result<(), T> {
        let mut item = Some(item);
        loop {
            let notified = self.space.notified();
            {
                let mut g = self.inner.lock();
                if g.closed {
                    return Err(item.take().expect("item"));
                }
                // Below the bound, the hand is empty too.
                if g.buf.len() < self.cap {
                    g.buf.push_back((item.take().expect("item"), origin));
                    self.wake_consumers(&mut g, 1);
                    return Ok(());
                }
                g.producers_waiting += 1;
            }
            notified.await;
        }
    }

    /// Enqueues if there is a free slot now; otherwise gives the item back.
    pub fn try_send(&self, item: T, origin: u64) -> Result<(), T> {
        let mut g = self.inner.lock();
        if g.closed || g.buf.len() >= self.cap {
            return Err(item);
        }
        g.buf.push_back((item, origin));
        self.wake_consumers(&mut g, 1);
        Ok(())
    }

    /// Closed loop, one producer: enqueues every item of `items`, in order,
    /// each as soon as a slot frees. Those that fit now get origin `now`
    /// (ns); the others get the moment their turn to try began (as the job
    /// before them got in). Returns once all are queued (with the number the
    /// gate refused), or with the number never queued if the queue was
    /// closed. `items` is emptied at the first poll, so the caller may reuse
    /// its buffer (a future dropped before its first poll leaves it as it
    /// was).
    pub async fn send_all(&self, items: &mut Vec<T>, now: u64) -> Result<usize, usize> {
        {
            let mut g = self.inner.lock();
            if g.closed {
                let n = items.len();
                items.clear();
                return Err(n);
            }
            let before = g.buf.len();
            // Hand jobs get their origin as they enter the queue.
            g.buf.extend(items.drain(..).map(|t| (t, now)));
            if let Some(gate) = &self.gate {
                // Those that fit now enter now.
                let fit = g.buf.len().min(self.cap);
                if let Some(k) = (before..fit).find(|&i| !gate(&g.buf[i].0, now)) {
                    g.refused += g.buf.len() - k;
                    g.buf.truncate(k);
                }
            }
            let after = g.buf.len();
            if after > self.cap && before <= self.cap {
                // The job before the hand's first got in just now.
                g.hand_since = now;
            }
            let pushed = after.min(self.cap).saturating_sub(before);
            self.wake_consumers(&mut g, pushed);
            if after <= self.cap {
                return Ok(std::mem::take(&mut g.refused));
            }
        }
        loop {
            let notified = self.space.notified();
            {
                let mut g = self.inner.lock();
                let len = g.buf.len();
                if len <= self.cap {
                    return Ok(std::mem::take(&mut g.refused));
                }
                if g.closed {
                    g.buf.truncate(self.cap);
                    return Err(len - self.cap);
                }
                g.producers_waiting += 1;
            }
            notified.await;
        }
    }

    /// Takes the next item and its latency origin if there is one; `now` is
    /// the moment of taking (the origin of the hand's next job, if any).
    #[inline(always)]
    pub fn try_recv(&self, now: u64) -> Option<(T, u64)> {
        let mut g = self.inner.lock();
        let front = self.take(&mut g, now)?;
        self.wake_producer(&mut g);
        Some(front)
    }

    /// Claims the next item, as `try_recv` does, and after it up to
    /// `max - 1` more into `more` (in queue order), under one lock — but only
    /// while the first and each further item is `light`: a worker holds at
    /// most `max` light jobs others could have run, which it runs back to
    /// back at once. Each freed slot is refilled from the hand as if the
    /// items had been taken one by one at `now`. One lock per claim instead
    /// of one per job is what lets several workers share the queue (see
    /// docs/performance.md, "Agent CPU per job").
    #[inline]
    pub fn try_recv_many(
        &self,
        now: u64,
        max: usize,
        more: &mut std::collections::VecDeque<(T, u64)>,
        light: impl Fn(&T) -> bool,
    ) -> Option<(T, u64)> {
        let mut g = self.inner.lock();
        let front = self.take(&mut g, now)?;
        if light(&front.0) {
            for _ in 1..max {
                match g.buf.front() {
                    Some((next, _)) if light(next) => {}
                    _ => break,
                }
                match self.take(&mut g, now) {
                    Some(x) => more.push_back(x),
                    None => break,
                }
            }
        }
        self.wake_producer(&mut g);
        Some(front)
    }

    /// Pops the front item; the hand's first job, if any, takes the freed
    /// slot (or the gate ends the hand there).
    #[inline(always)]
    fn take(&self, g: &mut Inner<T>, now: u64) -> Option<(T, u64)> {
        let front = g.buf.pop_front()?;
        g.freed += 1;
        let len = g.buf.len();
        if len >= self.cap {
            // The hand's first job takes the freed slot: its attempt began
            // when the job before it got in; the next one's begins now.
            let since = std::mem::replace(&mut g.hand_since, now);
            match &self.gate {
                Some(gate) if !gate(&g.buf[self.cap - 1].0, since) => {
                    // Not released: neither it nor the rest of the hand.
                    g.refused += len - (self.cap - 1);
                    g.buf.truncate(self.cap - 1);
                }
                _ => g.buf[self.cap - 1].1 = since,
            }
        }
        Some(front)
    }

    /// After items were taken: a producer parked for space may go on — the
    /// one whose hand is now empty (it may bring the next chunk), or, job by
    /// job, one per freed slot.
    #[inline(always)]
    fn wake_producer(&self, g: &mut Inner<T>) {
        let freed = std::mem::take(&mut g.freed);
        if g.producers_waiting == 0 || g.buf.len() > self.cap {
            return;
        }
        let k = freed.min(g.producers_waiting);
        g.producers_waiting -= k;
        for _ in 0..k {
            self.space.notify_one();
        }
    }

    /// The next item, its latency origin and the moment it was taken;
    /// `None` once the queue is closed and empty.
    pub async fn recv(&self) -> Option<(T, u64, u64)> {
        let t = crate::clock::now_ns();
        if let Some((x, origin)) = self.try_recv(t) {
            return Some((x, origin, t));
        }
        loop {
            let notified = self.items.notified();
            {
                let mut g = self.inner.lock();
                if g.buf.is_empty() {
                    if g.closed {
                        return None;
                    }
                    g.consumers_waiting += 1;
                } else {
                    drop(g);
                    let t = crate::clock::now_ns();
                    if let Some((x, origin)) = self.try_recv(t) {
                        return Some((x, origin, t));
                    }
                    continue;
                }
            }
            notified.await;
        }
    }

    /// No more items will be sent: consumers drain what is queued, then get
    /// `None`; blocked senders get their items back.
    pub fn close(&self) {
        let mut g = self.inner.lock();
        g.closed = true;
        g.consumers_waiting = 0;
        g.producers_waiting = 0;
        drop(g);
        self.items.notify_waiters();
        self.space.notify_waiters();
    }

    /// Jobs queued now (not counting a producer's hand).
    pub fn len(&self) -> usize {
        self.inner.lock().buf.len().min(self.cap)
    }

    /// Removes and returns everything queued or in the hand (for
    /// cancellation), and how many hand jobs the gate refused that no
    /// producer collected (its `send_all` was dropped by the cancel).
    pub fn drain(&self) -> (Vec<T>, usize) {
        let mut g = self.inner.lock();
        let refused = std::mem::take(&mut g.refused);
        (g.buf.drain(..).map(|(t, _)| t).collect(), refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_is_received_exactly_once_and_the_bound_holds() {
        let q = Arc::new(Queue::new(8));
        let mut consumers = Vec::new();
        for _ in 0..4 {
            let q = q.clone();
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some((x, _, _)) = q.recv().await {
                    assert!(q.len() <= 8);
                    got.push(x);
                }
                got
            }));
        }
        for i in 0..5_000u32 {
            q.send(i, 0).await.unwrap();
            assert!(q.len() <= 8);
        }
        for c in 0..50u32 {
            let mut chunk: Vec<u32> = (0..100).map(|k| 5_000 + c * 100 + k).collect();
            q.send_all(&mut chunk, crate::clock::now_ns())
                .await
                .unwrap();
            assert!(chunk.is_empty());
            assert!(q.len() <= 8);
        }
        q.close();
        let mut all = Vec::new();
        for c in consumers {
            all.extend(c.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_chunk_waits_in_the_hand_and_is_stamped_as_slots_free() {
        let q = Arc::new(Queue::new(2));
        let t0 = 1_000_000u64;
        let mut chunk: Vec<u32> = (0..4).collect();
        let q2 = q.clone();
        let p = tokio::spawn(async move { q2.send_all(&mut chunk, t0).await });
        tokio::task::yield_now().await;
        assert_eq!(q.len(), 2);
        let (t1, t2) = (t0 + 1_000_000, t0 + 2_000_000);
        // Both first jobs got in at t0.
        assert_eq!(q.try_recv(t1), Some((0, t0)));
        // Job 2 tried from t0 (when job 1 got in); it gets in at t1.
        assert_eq!(q.try_recv(t2), Some((1, t0)));
        // Job 3 began trying at t1, when job 2 got in; now the hand is empty.
        assert_eq!(q.try_recv(t2), Some((2, t0)));
        assert_eq!(q.try_recv(t2), Some((3, t1)));
        assert_eq!(p.await.unwrap(), Ok(0));
        assert_eq!(q.try_recv(t2), None);
    }

    #[tokio::test]
    async fn the_gate_decides_at_entry_and_cuts_the_rest_of_the_hand() {
        // Released while the origin is below 3_000 (as a timed run's end).
        let q = Arc::new(Queue::with_gate(2, Box::new(|_: &u32, o: u64| o < 3_000)));
        let q2 = q.clone();
        let p = tokio::spawn(async move { q2.send_all(&mut (0..6u32).collect(), 1_000).await });
        tokio::task::yield_now().await;
        assert_eq!(q.try_recv(2_000), Some((0, 1_000)));
        // Job 2 entered with origin 1_000, job 3 with 2_000; job 4's attempt
        // began at 3_000: refused, and job 5 with it.
        assert_eq!(q.try_recv(3_000), Some((1, 1_000)));
        assert_eq!(q.try_recv(4_000), Some((2, 1_000)));
        assert_eq!(q.try_recv(4_000), Some((3, 2_000)));
        assert_eq!(q.try_recv(4_000), None);
        assert_eq!(p.await.unwrap(), Ok(2));
        // A chunk refused at once.
        assert_eq!(q.send_all(&mut vec![7, 8], 5_000).await, Ok(2));
        assert_eq!(q.len(), 0);
    }

    /// A cancel drops the producer's send_all with jobs in its hand; the
    /// gate may still refuse them as workers drain the queue: drain says
    /// how many, so every job is counted once.
    #[tokio::test]
    async fn refusals_after_the_producer_is_gone_are_reported_by_drain() {
        let q = Arc::new(Queue::with_gate(2, Box::new(|_: &u32, o: u64| o < 3_000)));
        let q2 = q.clone();
        let p = tokio::spawn(async move { q2.send_all(&mut (0..6u32).collect(), 1_000).await });
        tokio::task::yield_now().await;
        p.abort();
        assert!(p.await.unwrap_err().is_cancelled());
        assert_eq!(q.try_recv(2_000), Some((0, 1_000)));
        assert_eq!(q.try_recv(4_000), Some((1, 1_000)));
        // Job 4's attempt began at 4_000: refused, and job 5 with it.
        assert_eq!(q.try_recv(5_000), Some((2, 1_000)));
        assert_eq!(q.drain(), (vec![3], 2));
    }

    #[tokio::test]
    async fn a_hand_cut_short_by_close_is_returned_as_never_queued() {
        let q = Arc::new(Queue::new(2));
        let q2 = q.clone();
        let p = tokio::spawn(async move { q2.send_all(&mut (0..5u32).collect(), 7).await });
        tokio::task::yield_now().await;
        assert_eq!(q.try_recv(8), Some((0, 7)));
        q.close();
        assert_eq!(p.await.unwrap(), Err(2));
        assert_eq!(q.drain(), (vec![1, 2], 0));
    }

    #[tokio::test]
    async fn try_send_sheds_when_full_and_close_releases_senders() {
        let q = Queue::new(2);
        assert!(q.try_send(1, 0).is_ok());
        assert!(q.try_send(2, 0).is_ok());
        assert_eq!(q.try_send(3, 0), Err(3));
        q.close();
        assert_eq!(q.send(4, 0).await, Err(4));
        assert_eq!(q.recv().await.map(|x| x.0), Some(1));
        assert_eq!(q.drain(), (vec![2], 0));
        assert_eq!(q.recv().await, None);
        let mut late = vec![5, 6];
        assert_eq!(q.send_all(&mut late, crate::clock::now_ns()).await, Err(2));
        assert!(late.is_empty());
    }
}

#[cfg(test)]
mod stress;
