//! The bounded job queue: multi-producer, multi-consumer, capacity counted in
//! jobs. Each job goes to whichever consumer asks first (FIFO among waiters).
//!
//! Built for chunks: a closed-loop producer hands over a whole chunk at once
//! (`send_all`). What fits is queued; the rest waits in the producer's hand
//! (the *stash*, outside the bound, like the one job a blocked producer
//! holds) and enters the queue one job per freed slot, at the moment the slot
//! frees, stamped with the moment its enqueue attempt began. So the bound
//! still holds in jobs, each job still goes to whichever consumer is free,
//! and the producer wakes once per chunk instead of once per job.

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// A queued item that carries the time its enqueue attempt began.
pub trait Stamp {
    fn stamp(&mut self, at: Instant);
}

#[derive(Debug)]
struct Inner<T> {
    buf: VecDeque<T>,
    /// The producer's hand: jobs waiting for a slot, in order. Non-empty
    /// only while `buf` is full.
    stash: VecDeque<T>,
    /// When the stash's first job began its attempt (when the job before it
    /// got into the queue).
    stash_since: Option<Instant>,
    closed: bool,
    /// Consumers parked on `items` and not yet notified.
    consumers_waiting: usize,
    /// Producers parked on `space` and not yet notified.
    producers_waiting: usize,
}

/// A bounded MPMC queue.
#[derive(Debug)]
pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    cap: usize,
    items: Notify,
    space: Notify,
}

impl<T: Stamp> Queue<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                buf: VecDeque::with_capacity(cap.min(1 << 16)),
                stash: VecDeque::new(),
                stash_since: None,
                closed: false,
                consumers_waiting: 0,
                producers_waiting: 0,
            }),
            cap: cap.max(1),
            items: Notify::new(),
            space: Notify::new(),
        }
    }

    fn wake_consumers(&self, inner: &mut Inner<T>, n: usize) {
        let k = n.min(inner.consumers_waiting);
        inner.consumers_waiting -= k;
        for _ in 0..k {
            self.items.notify_one();
        }
    }

    /// Waits for a free slot, then enqueues (the item keeps its stamp).
    /// Returns the item back if the queue was closed.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let mut item = Some(item);
        loop {
            let notified = self.space.notified();
            {
                let mut g = self.inner.lock();
                if g.closed {
                    return Err(item.take().expect("item"));
                }
                if g.buf.len() < self.cap && g.stash.is_empty() {
                    g.buf.push_back(item.take().expect("item"));
                    self.wake_consumers(&mut g, 1);
                    return Ok(());
                }
                g.producers_waiting += 1;
            }
            notified.await;
        }
    }

    /// Enqueues if there is a free slot now; otherwise gives the item back.
    pub fn try_send(&self, item: T) -> Result<(), T> {
        let mut g = self.inner.lock();
        if g.closed || g.buf.len() >= self.cap || !g.stash.is_empty() {
            return Err(item);
        }
        g.buf.push_back(item);
        self.wake_consumers(&mut g, 1);
        Ok(())
    }

    /// Closed loop, one producer: enqueues every item of `items`, in order,
    /// each as soon as a slot frees. Those that fit now are stamped `now`;
    /// the others are stamped when their turn to try begins (as the job
    /// before them gets in). Returns once all are queued, or with the number
    /// never queued if the queue was closed.
    pub async fn send_all(
        &self,
        items: impl IntoIterator<Item = T>,
        now: Instant,
    ) -> Result<(), usize> {
        {
            let mut g = self.inner.lock();
            if g.closed {
                return Err(items.into_iter().count());
            }
            let mut pushed = 0;
            for mut it in items {
                if g.buf.len() < self.cap && g.stash.is_empty() {
                    it.stamp(now);
                    g.buf.push_back(it);
                    pushed += 1;
                } else {
                    g.stash.push_back(it);
                }
            }
            if !g.stash.is_empty() && g.stash_since.is_none() {
                g.stash_since = Some(now);
            }
            self.wake_consumers(&mut g, pushed);
            if g.stash.is_empty() {
                return Ok(());
            }
        }
        loop {
            let notified = self.space.notified();
            {
                let mut g = self.inner.lock();
                if g.stash.is_empty() {
                    return Ok(());
                }
                if g.closed {
                    let left = g.stash.len();
                    g.stash.clear();
                    g.stash_since = None;
                    return Err(left);
                }
                g.producers_waiting += 1;
            }
            notified.await;
        }
    }

    /// Takes the next item if there is one; `now` is the moment of taking
    /// (it stamps the stashed job that moves into the freed slot).
    pub fn try_recv(&self, now: Instant) -> Option<T> {
        let mut g = self.inner.lock();
        let item = g.buf.pop_front()?;
        if let Some(mut next) = g.stash.pop_front() {
            next.stamp(g.stash_since.unwrap_or(now));
            g.buf.push_back(next);
            g.stash_since = if g.stash.is_empty() { None } else { Some(now) };
            if g.stash.is_empty() && g.producers_waiting > 0 {
                // The producer's chunk is all in: it may bring the next.
                g.producers_waiting -= 1;
                self.space.notify_one();
            }
        } else if g.producers_waiting > 0 {
            g.producers_waiting -= 1;
            self.space.notify_one();
        }
        Some(item)
    }

    /// The next item and the moment it was taken; `None` once the queue is
    /// closed and empty. `hint`: a clock reading taken just before (the
    /// completion of the caller's previous job), used if an item is there.
    pub async fn recv(&self, hint: Option<Instant>) -> Option<(T, Instant)> {
        let t = hint.unwrap_or_else(crate::clock::now);
        if let Some(x) = self.try_recv(t) {
            return Some((x, t));
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
                    let t = crate::clock::now();
                    if let Some(x) = self.try_recv(t) {
                        return Some((x, t));
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

    /// Jobs queued now (not counting a producer's stash).
    pub fn len(&self) -> usize {
        self.inner.lock().buf.len()
    }

    /// Removes and returns everything queued or stashed (for cancellation).
    pub fn drain(&self) -> Vec<T> {
        let mut g = self.inner.lock();
        let mut v: Vec<T> = g.buf.drain(..).collect();
        v.extend(g.stash.drain(..));
        g.stash_since = None;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    impl Stamp for u32 {
        fn stamp(&mut self, _at: Instant) {}
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct S(u32, Option<Instant>);
    impl Stamp for S {
        fn stamp(&mut self, at: Instant) {
            self.1 = Some(at);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_is_received_exactly_once_and_the_bound_holds() {
        let q = Arc::new(Queue::new(8));
        let mut consumers = Vec::new();
        for _ in 0..4 {
            let q = q.clone();
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some((x, _)) = q.recv(None).await {
                    assert!(q.len() <= 8);
                    got.push(x);
                }
                got
            }));
        }
        for i in 0..5_000u32 {
            q.send(i).await.unwrap();
            assert!(q.len() <= 8);
        }
        for c in 0..50u32 {
            let chunk: Vec<u32> = (0..100).map(|k| 5_000 + c * 100 + k).collect();
            q.send_all(chunk, crate::clock::now()).await.unwrap();
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
        let t0 = crate::clock::now();
        let chunk: Vec<S> = (0..4).map(|i| S(i, None)).collect();
        let q2 = q.clone();
        let p = tokio::spawn(async move { q2.send_all(chunk, t0).await });
        tokio::task::yield_now().await;
        assert_eq!(q.len(), 2);
        let t1 = t0 + std::time::Duration::from_millis(1);
        let t2 = t0 + std::time::Duration::from_millis(2);
        // Both first jobs got in at t0.
        assert_eq!(q.try_recv(t1), Some(S(0, Some(t0))));
        // Job 2 tried from t0 (when job 1 got in); it gets in at t1.
        assert_eq!(q.try_recv(t2), Some(S(1, Some(t0))));
        // Job 3 began trying at t1, when job 2 got in; now the hand is empty.
        assert_eq!(q.try_recv(t2), Some(S(2, Some(t0))));
        assert_eq!(q.try_recv(t2), Some(S(3, Some(t1))));
        assert_eq!(p.await.unwrap(), Ok(()));
        assert_eq!(q.try_recv(t2), None);
    }

    #[tokio::test]
    async fn try_send_sheds_when_full_and_close_releases_senders() {
        let q = Queue::new(2);
        assert!(q.try_send(1).is_ok());
        assert!(q.try_send(2).is_ok());
        assert_eq!(q.try_send(3), Err(3));
        q.close();
        assert_eq!(q.send(4).await, Err(4));
        assert_eq!(q.recv(None).await.map(|x| x.0), Some(1));
        assert_eq!(q.drain(), vec![2]);
        assert_eq!(q.recv(None).await, None);
        assert_eq!(q.send_all(vec![5, 6], crate::clock::now()).await, Err(2));
    }
}
