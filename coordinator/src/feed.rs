//! Feeding one agent: its share of the seeded stream, generated and sent in batches within the agent's credit.

use std::sync::Arc;

use cwbench::batch::BatchBuilder;
use cwbench::digest::Digest;
use cwbench::generator::Generator;
use cwbench::proto::run_request::Msg as Out;
use cwbench::proto::{self, RunRequest};
use cwbench::scenario::{Distribution, Plan};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Jobs per shard chunk: in shard mode, chunk k of the stream goes to agent
/// k mod n (docs/workload.md).
pub const SHARD_CHUNK: u64 = 1024;

/// Which ids an agent gets.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    pub index: u64,
    pub of: u64,
}

impl Share {
    /// Number of jobs of a `total`-job stream in this share.
    pub fn jobs(&self, total: u64, mode: Distribution) -> u64 {
        if mode == Distribution::Replicate || self.of <= 1 {
            return total;
        }
        let full_chunks = total / SHARD_CHUNK;
        let rest = total % SHARD_CHUNK;
        let mine = full_chunks / self.of + u64::from(full_chunks % self.of > self.index);
        let tail = if full_chunks % self.of == self.index {
            rest
        } else {
            0
        };
        mine * SHARD_CHUNK + tail
    }
}

/// When feeding stops early, and when the run is over.
#[derive(Debug, Clone, Default)]
pub(crate) struct FeedSignals {
    /// A timed run's measured part is over: end the stream now.
    pub stop: CancellationToken,
    /// The run is interrupted (SIGINT/SIGTERM): cancel the agent's run.
    pub interrupt: CancellationToken,
    /// The agent's Done (or the host's end) is in: let the stream go.
    pub over: CancellationToken,
    /// EndOfJobs waits for this (a WebSocket server: until its clients
    /// are done).
    pub hold: Option<CancellationToken>,
}

/// What the feeding did.
#[derive(Debug)]
pub(crate) struct Fed {
    pub sent: u64,
    pub digest: Digest,
    /// The run was interrupted before its Done, and Cancel went out.
    pub cancelled: bool,
}

/// Generates this agent's share of the stream and sends it within credit,
/// then EndOfJobs; keeps the stream open until the run is over, so that an
/// interrupt can still send Cancel.
pub(crate) async fn feed(
    plan: Arc<Plan>,
    share: Share,
    jobs: u64,
    (batch_jobs, packed): (usize, bool),
    credit: Arc<Semaphore>,
    signals: FeedSignals,
    tx: mpsc::Sender<RunRequest>,
) -> Fed {
    let (sent, digest) = send_jobs(
        &plan,
        share,
        jobs,
        (batch_jobs, packed),
        &credit,
        &signals,
        &tx,
    )
    .await;
    if let Some(hold) = &signals.hold {
        tokio::select! {
            _ = hold.cancelled() => {}
            _ = signals.interrupt.cancelled() => {}
            _ = signals.over.cancelled() => {}
        }
    }
    if !signals.interrupt.is_cancelled() {
        let _ = tx
            .send(RunRequest {
                msg: Some(Out::End(proto::EndOfJobs {
                    jobs_sent: sent,
                    digest: digest.value(),
                })),
            })
            .await;
    }
    let cancelled = tokio::select! {
        // A Done already in wins: that host finished, whatever came after.
        biased;
        _ = signals.over.cancelled() => false,
        _ = signals.interrupt.cancelled() => {
            let cancel = proto::Cancel { reason: "the coordinator was interrupted".into() };
            let _ = tx.send(RunRequest { msg: Some(Out::Cancel(cancel)) }).await;
            true
        }
    };
    // Dropping the sender half-closes the request stream: after EndOfJobs
    // or Cancel the agent reads that as the normal end, not as a vanished
    // coordinator.
    Fed {
        sent,
        digest,
        cancelled,
    }
}

/// The jobs, within credit, until all are sent or a signal stops them.
/// Returns the jobs sent and their digest.
async fn send_jobs(
    plan: &Plan,
    share: Share,
    jobs: u64,
    (batch_jobs, packed): (usize, bool),
    credit: &Semaphore,
    signals: &FeedSignals,
    tx: &mpsc::Sender<RunRequest>,
) -> (u64, Digest) {
    let mut g = Generator::new(plan);
    let mode = plan.scenario.run.distribution;
    let sharded = mode == Distribution::Shard && share.of > 1;
    let mut digest = Digest::new();
    let mut b =
        BatchBuilder::new(plan.classes.len() > 1, plan.is_open(), batch_jobs).packed(packed);
    let mut sent = 0u64;
    while sent < jobs {
        // Wait for at least one job of credit, then take what is there.
        let p = tokio::select! {
            biased;
            _ = signals.interrupt.cancelled() => break,
            // A timed run is over: end the stream now.
            _ = signals.stop.cancelled() => break,
            p = credit.acquire() => p,
        };
        let Ok(p) = p else {
            return (sent, digest);
        };
        p.forget();
        let mut n = 1usize;
        let want = (batch_jobs as u64).min(jobs - sent) as usize;
        let more = (want - 1).min(credit.available_permits());
        if more > 0
            && let Ok(p) = credit.try_acquire_many(more as u32)
        {
            p.forget();
            n += more;
        }
        let mut expect = None;
        for _ in 0..n {
            if sharded {
                next_in_share(&mut g, share);
                // A batch never spans a gap between this agent's chunks.
                if expect.is_some_and(|e| e != g.next_id()) {
                    break;
                }
            }
            expect = Some(g.next_id() + 1);
            let j = g.next_job();
            digest.push(&j);
            b.push(&j);
        }
        let taken = b.len();
        // Credit taken but not used (a batch cut at a chunk boundary) goes back.
        if taken < n {
            credit.add_permits(n - taken);
        }
        sent += taken as u64;
        if tx
            .send(RunRequest {
                msg: Some(Out::Jobs(b.take())),
            })
            .await
            .is_err()
        {
            return (sent - taken as u64, digest);
        }
    }
    (sent, digest)
}

/// Moves the generator to the next id of `share` (no-op inside its chunks).
fn next_in_share(g: &mut Generator, share: Share) {
    let id = g.next_id();
    let chunk = id / SHARD_CHUNK;
    if chunk % share.of != share.index {
        let skip = (share.index + share.of - chunk % share.of) % share.of;
        g.seek((chunk + skip) * SHARD_CHUNK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_stream_exactly() {
        for total in [0, 1, 1023, 1024, 1025, 5000, 100_000] {
            for of in 1..=5 {
                let sum: u64 = (0..of)
                    .map(|index| Share { index, of }.jobs(total, Distribution::Shard))
                    .sum();
                assert_eq!(sum, total, "total {total} over {of}");
            }
        }
        assert_eq!(
            Share { index: 1, of: 3 }.jobs(77, Distribution::Replicate),
            77
        );
    }
}
