//! Runtime limits under the configured budgets: adaptive batching (see
//! [`crate::adaptive`]) lowers the step's token budget and the number of running sequences to
//! hold a target inter-token latency, and raises them again when there is slack.
//!
//! A lowered sequence cap never preempts by itself: running sequences finish normally and
//! nothing new is admitted while the batch is over the cap, except a higher-priority request,
//! which may preempt lower ones to get its slot (the usual admission rule).

use super::Scheduler;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StepLimits {
    /// `None`: the configured `max_batched_tokens`.
    pub tokens: Option<usize>,
    /// `None`: the configured `max_num_seqs`.
    pub seqs: Option<usize>,
    /// Sequences of at least this priority are exempt from the lowered token budget (the
    /// ones whose latency the limits protect: their own prompts are not chunked finer).
    pub protect: Option<i32>,
}

impl Scheduler {
    /// Lower (or, with `None`, restore) the per-step token budget and the running-sequence
    /// cap. Values above the configuration are clamped to it; the token budget never drops
    /// below what the running decodes need plus one block of prefill, so prompts still
    /// advance and decodes never run out of budget.
    pub fn set_step_limits(&mut self, tokens: Option<usize>, seqs: Option<usize>) {
        self.set_step_limits_protecting(tokens, seqs, None);
    }

    /// [`Scheduler::set_step_limits`], with sequences of priority ≥ `protect` exempt from
    /// the token limit: the step walks them first (priority order) with the full budget, and
    /// only what comes after them is held to `tokens`.
    pub fn set_step_limits_protecting(
        &mut self,
        tokens: Option<usize>,
        seqs: Option<usize>,
        protect: Option<i32>,
    ) {
        self.limits = StepLimits {
            tokens: tokens.map(|t| t.clamp(1, self.cfg.max_batched_tokens)),
            seqs: seqs.map(|s| s.clamp(1, self.cfg.max_num_seqs)),
            protect,
        };
    }

    /// The token budget of the next step (for the unprotected sequences).
    pub fn step_budget(&self) -> usize {
        match self.limits.tokens {
            None => self.cfg.max_batched_tokens,
            Some(t) => t
                .max(self.running_slots + self.cfg.block_size)
                .min(self.cfg.max_batched_tokens.max(self.running_slots)),
        }
    }

    /// The budget a step starts with: the protected one when some priorities are protected
    /// (they are walked first; the others are held to [`Scheduler::step_budget`]).
    pub(super) fn initial_budget(&self) -> usize {
        match self.limits.protect {
            Some(_) => self.protected_budget(),
            None => self.step_budget(),
        }
    }

    /// The step's token budget for the protected priorities' work.
    pub(super) fn protected_budget(&self) -> usize {
        self.cfg
            .max_protected_tokens
            .unwrap_or(0)
            .max(self.cfg.max_batched_tokens)
    }

    /// When the step's walk reaches a sequence of priority `p`: the budget left, lowered to
    /// the limit once past the protected priorities. Never below what the decodes still to
    /// come need plus one block of prefill, except in a step that prefills a protected
    /// request (`protected_prefill`): there the others get nothing (their decodes wait a
    /// step too), because their work would delay its first token.
    pub(super) fn budget_at(
        &self,
        p: i32,
        left: usize,
        used: usize,
        decodes_to_come: usize,
        protected_prefill: bool,
    ) -> usize {
        match self.limits.protect {
            Some(protect) if p < protect && protected_prefill => 0,
            Some(protect) if p < protect => {
                let limit = self.limits.tokens.unwrap_or(self.cfg.max_batched_tokens);
                left.min(
                    limit
                        .saturating_sub(used)
                        .max(decodes_to_come + self.cfg.block_size),
                )
            }
            _ => left,
        }
    }

    /// Sequences that may run at once now.
    pub fn seq_cap(&self) -> usize {
        self.limits.seqs.unwrap_or(self.cfg.max_num_seqs)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn sched() -> Scheduler {
        Scheduler::new(SchedulerConfig {
            max_batched_tokens: 256,
            max_num_seqs: 4,
            block_size: 4,
            num_blocks: 256,
            max_model_len: 512,
            ..SchedulerConfig::default()
        })
        .unwrap()
    }

    fn finish_prefill(s: &mut Scheduler) -> StepPlan {
        let plan = s.schedule().unwrap();
        sample(s, &plan);
        plan
    }

    fn sample(s: &mut Scheduler, plan: &StepPlan) {
        for it in plan.sample_items() {
            for q in it.sample_seqs() {
                s.append_token(q, 1).unwrap();
            }
        }
    }

    /// (request, tokens) of each item, in plan order.
    fn sizes(plan: &StepPlan) -> Vec<(RequestId, usize)> {
        plan.items
            .iter()
            .map(|i| (i.seq.request, i.tokens.len()))
            .collect()
    }

    #[test]
    fn a_lower_token_budget_shrinks_prefill_chunks() {
        let mut s = sched();
        s.add(Request::new(1, (0..200).collect(), 8)).unwrap();
        s.set_step_limits(Some(40), None);
        let plan = s.schedule().unwrap();
        assert_eq!(plan.num_tokens, 40);
        s.set_step_limits(None, None);
        let plan = s.schedule().unwrap();
        assert_eq!(plan.num_tokens, 160);
        s.check_invariants().unwrap();
    }

    #[test]
    fn a_lower_seq_cap_stops_admission_but_lets_higher_priority_preempt() {
        let mut s = sched();
        for id in 1..=3 {
            s.add(Request::new(id, vec![id as u32; 8], 50)).unwrap();
        }
        finish_prefill(&mut s);
        assert_eq!(s.num_running(), 3);
        // Cap below the running batch: nobody is preempted, a new equal-priority request waits.
        s.set_step_limits(None, Some(2));
        s.add(Request::new(4, vec![9; 8], 50)).unwrap();
        let plan = finish_prefill(&mut s);
        assert!(plan.preempted.is_empty());
        assert_eq!(s.num_running(), 3);
        assert_eq!(s.status(SeqId::new(4, 0)), Some(SeqStatus::Waiting));
        // A VIP request takes a slot from the newest normal one(s).
        s.add(Request::new(5, vec![7; 8], 50).with_priority(100))
            .unwrap();
        let plan = finish_prefill(&mut s);
        assert_eq!(s.status(SeqId::new(5, 0)), Some(SeqStatus::Running));
        assert!(!plan.preempted.is_empty());
        assert!(s.num_running() <= 2, "{}", s.num_running());
        s.check_invariants().unwrap();
    }

    #[test]
    fn protected_priorities_keep_the_full_budget() {
        let mut s = sched();
        s.add(Request::new(1, (0..200).collect(), 8)).unwrap();
        s.add(Request::new(2, (300..400).collect(), 8).with_priority(100))
            .unwrap();
        s.set_step_limits_protecting(Some(40), None, Some(100));
        // The VIP prompt runs whole (100 tokens), alone: the normal prompt would delay its
        // first token.
        let plan = finish_prefill(&mut s);
        assert_eq!(plan.items.len(), 1);
        assert_eq!(plan.items[0].tokens.len(), 100);
        // Next step: the VIP decodes and the normal prompt gets what the limit leaves.
        let plan = s.schedule().unwrap();
        assert_eq!(plan.items[0].tokens.len(), 1);
        assert_eq!(plan.items[1].tokens.len(), 39);
        s.check_invariants().unwrap();
    }

    #[test]
    fn a_protected_prefill_step_runs_alone() {
        let mut s = sched();
        for id in 1..=2 {
            s.add(Request::new(id, vec![id as u32; 8], 50)).unwrap();
        }
        finish_prefill(&mut s);
        s.add(Request::new(3, (0..200).collect(), 8)).unwrap();
        s.add(Request::new(4, (300..340).collect(), 8).with_priority(100))
            .unwrap();
        // No learned limit yet: the step still keeps the normal prompt and decodes out.
        s.set_step_limits_protecting(None, None, Some(100));
        let plan = s.schedule().unwrap();
        assert_eq!(sizes(&plan), vec![(4, 40)]);
        sample(&mut s, &plan);
        // Next step: everyone decodes, and the normal prompt gets the rest.
        let plan = s.schedule().unwrap();
        assert_eq!(sizes(&plan), vec![(4, 1), (1, 1), (2, 1), (3, 200)]);
        s.check_invariants().unwrap();
    }

    #[test]
    fn the_budget_always_covers_running_decodes() {
        let mut s = sched();
        for id in 1..=4 {
            s.add(Request::new(id, vec![id as u32; 3], 50)).unwrap();
        }
        finish_prefill(&mut s);
        s.set_step_limits(Some(1), Some(1));
        assert!(s.step_budget() >= 4 + 4);
        let plan = finish_prefill(&mut s);
        assert_eq!(plan.items.len(), 4);
        s.check_invariants().unwrap();
    }

    #[test]
    fn a_protected_budget_starts_a_burst_of_protected_prompts_together() {
        let run = |protected: Option<usize>| {
            let mut s = Scheduler::new(SchedulerConfig {
                max_batched_tokens: 64,
                max_num_seqs: 8,
                block_size: 4,
                num_blocks: 256,
                max_model_len: 512,
                max_protected_tokens: protected,
                ..SchedulerConfig::default()
            })
            .unwrap();
            s.add(Request::new(1, (0..100).collect(), 8)).unwrap();
            for id in 2..=3 {
                s.add(Request::new(id, vec![id as u32; 40], 8).with_priority(100))
                    .unwrap();
            }
            s.set_step_limits_protecting(None, None, Some(100));
            let plan = s.schedule().unwrap();
            s.check_invariants().unwrap();
            sizes(&plan)
        };
        // One step's budget: the second VIP prompt waits for the next step (not split).
        assert_eq!(run(None), vec![(2, 40)]);
        // A protected budget of 128: both start now; the normal prompt still waits.
        assert_eq!(run(Some(128)), vec![(2, 40), (3, 40)]);
    }
}
