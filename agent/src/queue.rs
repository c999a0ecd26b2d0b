//! The bounded job queue: multi-producer, multi-consumer, capacity counted in
//! jobs. Each job goes to whichever consumer asks first (FIFO among waiters).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Semaphore;

/// A bounded MPMC queue. `space` holds one permit per free slot, `items` one
/// per queued item; the deque is the truth once the queue is closed.
#[derive(Debug)]
pub struct Queue<T> {
    buf: Mutex<VecDeque<T>>,
    space: Semaphore,
    items: Semaphore,
}

impl<T> Queue<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: Mutex::new(VecDeque::with_capacity(cap.min(1 << 16))),
            space: Semaphore::new(cap),
            items: Semaphore::new(0),
        }
    }

    /// Waits for a free slot, then enqueues. Returns the item back if the
    /// queue was closed.
    pub async fn send(&self, item: T) -> Result<(), T> {
        match self.space.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(item),
        }
        self.buf.lock().push_back(item);
        self.items.add_permits(1);
        Ok(())
    }

    /// Enqueues if there is a free slot now; otherwise gives the item back.
    pub fn try_send(&self, item: T) -> Result<(), T> {
        match self.space.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => return Err(item),
        }
        self.buf.lock().push_back(item);
        self.items.add_permits(1);
        Ok(())
    }

    /// The next item; `None` once the queue is closed and empty.
    pub async fn recv(&self) -> Option<T> {
        match self.items.acquire().await {
            Ok(p) => {
                p.forget();
                let item = self.buf.lock().pop_front();
                if item.is_some() {
                    self.space.add_permits(1);
                }
                item
            }
            // Closed: whatever is left is taken directly.
            Err(_) => {
                let item = self.buf.lock().pop_front();
                if item.is_some() {
                    self.space.add_permits(1);
                }
                item
            }
        }
    }

    /// No more items will be sent: consumers drain what is queued, then get
    /// `None`; blocked senders get their item back.
    pub fn close(&self) {
        self.items.close();
        self.space.close();
    }

    /// Jobs queued now.
    pub fn len(&self) -> usize {
        self.buf.lock().len()
    }

    /// Removes and returns everything queued (for cancellation).
    pub fn drain(&self) -> Vec<T> {
        self.buf.lock().drain(..).collect()
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
                while let Some(x) = q.recv().await {
                    assert!(q.len() <= 8);
                    got.push(x);
                }
                got
            }));
        }
        for i in 0..10_000u32 {
            q.send(i).await.unwrap();
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
    async fn try_send_sheds_when_full_and_close_releases_senders() {
        let q = Queue::new(2);
        assert!(q.try_send(1).is_ok());
        assert!(q.try_send(2).is_ok());
        assert_eq!(q.try_send(3), Err(3));
        q.close();
        assert_eq!(q.send(4).await, Err(4));
        assert_eq!(q.recv().await, Some(1));
        assert_eq!(q.drain(), vec![2]);
        assert_eq!(q.recv().await, None);
    }
}
