//! The engine's side of constrained decoding: computing the next tokens' masks on a worker
//! thread while the forward pass runs, so a step costs max(forward, masks) instead of
//! their sum. The previous token of every sequence is known (committed) before the forward
//! starts, so its mask depends on nothing the forward computes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use r1_model::{Batch, Logits, ModelError};

use crate::scheduler::{RequestId, SeqId, StepPlan};

use super::{EngineError, EngineEvent, EngineLoop, RequestState};

impl EngineLoop {
    /// The step's forward pass, with this step's constrained samples' masks computed on a
    /// worker thread meanwhile (the tokens they follow are all committed). A sequence whose
    /// grammar fails ends its request with an error event.
    pub(super) fn forward_with_masks(
        &mut self,
        plan: &StepPlan,
        batch: &Batch,
    ) -> Result<Logits, ModelError> {
        let masks = to_mask(plan, &self.requests);
        let (forward, work) = std::thread::scope(|scope| {
            let requests = &mut self.requests;
            let worker =
                (!masks.is_empty()).then(|| scope.spawn(|| compute_masks(&masks, requests)));
            let forward = self.model.forward(batch, &mut self.kv);
            let waited = Instant::now();
            let work = worker.map(|w| {
                let work = w.join().unwrap_or_else(|_| MaskWork {
                    failed: masks
                        .iter()
                        .map(|&s| {
                            (
                                s,
                                "constrained decoding: the mask computation panicked".into(),
                            )
                        })
                        .collect(),
                    ..Default::default()
                });
                (work, waited.elapsed())
            });
            (forward, work)
        });
        if let Some((work, waited)) = work {
            self.counters.constraint_masks += work.masks;
            self.counters.constraint_mask_secs += work.busy.as_secs_f64();
            self.counters.constraint_wait_secs += waited.as_secs_f64();
            for (seq, msg) in work.failed {
                self.fail_request(seq.request, msg);
            }
        }
        forward
    }

    /// End a request with an error event (a grammar that failed mid-decode): its other
    /// choices stop too, and its blocks are freed.
    pub(super) fn fail_request(&mut self, id: RequestId, msg: String) {
        if let Some(r) = self.requests.remove(&id) {
            tracing::warn!(request = %id, "{msg}");
            self.counters.metrics.finished.abort += r.open as u64;
            let _ = self.sched.cancel_request(id);
            let _ = r.tx.send(EngineEvent::Error(EngineError::Invalid(msg)));
        }
    }
}

/// What the mask worker did in one step.
#[derive(Default)]
pub(super) struct MaskWork {
    /// Sequences whose matcher failed: they end with an error event.
    pub failed: Vec<(SeqId, String)>,
    pub masks: u64,
    pub busy: Duration,
}

/// The constrained sequences this step samples whose mask is not computed yet.
pub(super) fn to_mask(plan: &StepPlan, requests: &HashMap<RequestId, RequestState>) -> Vec<SeqId> {
    plan.sample_items()
        .flat_map(|it| it.sample_seqs())
        .filter(|seq| {
            requests
                .get(&seq.request)
                .and_then(|r| r.seqs.get(&seq.index))
                .and_then(|s| s.matcher.as_ref())
                .is_some_and(|m| m.needs_mask())
        })
        .collect()
}

/// Compute the masks of `seqs` (run on the worker thread during the forward pass).
pub(super) fn compute_masks(
    seqs: &[SeqId],
    requests: &mut HashMap<RequestId, RequestState>,
) -> MaskWork {
    let t0 = Instant::now();
    let mut work = MaskWork::default();
    for &seq in seqs {
        let Some(m) = requests
            .get_mut(&seq.request)
            .and_then(|r| r.seqs.get_mut(&seq.index))
            .and_then(|s| s.matcher.as_mut())
        else {
            continue;
        };
        match m.compute_mask() {
            Ok(()) => work.masks += 1,
            Err(e) => work.failed.push((seq, e)),
        }
    }
    work.busy = t0.elapsed();
    work
}
