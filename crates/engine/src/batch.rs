//! Continuous batching: every running generation advances in one step.
//!
//! A step samples one token for each generation that is decoding, gives the prompts still
//! being prefilled a share of the step's token budget (shortest remaining first, so a
//! newcomer's short prompt gets its first token while a long prefill is still running), and
//! feeds all of it to the model in one batched call ([`Runner::forward_batch`]). Each job
//! keeps its own session, sampler, limits and stop verdicts; the model computes every
//! session's tokens exactly as it would alone, so what a job generates never depends on who
//! else is in the batch.

use std::time::Instant;

use rayon::prelude::*;

use crate::generate::{Finish, GenError, GenerationParams, PrefillStats, Session};
use crate::pool::{Placement, SessionPool};
use crate::runner::{Runner, State};
use crate::sampler::Sampler;
use dsv4_model::{Next, Want};

/// The caller's name for a job.
pub type JobId = u64;

/// The caller's verdict after each sampled token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Sample the next token by argmax (it is DSML syntax).
    pub greedy: bool,
    /// Generate nothing more (the token just reported is still consumed by the session).
    pub stop: bool,
}

/// What a step reports about a job, in this order over the job's life: `Ready`, any number of
/// `Token`s, then one `Finished` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchEvent {
    /// The whole prompt is in the session; the first token comes with the next step.
    Ready(PrefillStats),
    /// A sampled token (never the end-of-sentence token, which ends the job with `Eos`).
    Token(u32),
    Finished(Finish),
    /// The model failed on this job's step; its session was reset.
    Failed(String),
}

struct Active {
    id: JobId,
    slot: usize,
    /// Prompt tokens the session did not hold at admission, `done` of them fed since.
    todo: Vec<u32>,
    done: usize,
    stats: PrefillStats,
    admitted: Instant,
    params: GenerationParams,
    sampler: Sampler,
    generated: Vec<u32>,
    /// What the next draw needs from the logits after the session's last token (the row or
    /// its reduction for that draw): present once the prompt is in.
    logits: Option<Next>,
    ready_sent: bool,
    greedy: bool,
}

impl Active {
    /// The prompt is in: the one `Ready`, with the time since admission.
    fn announce_ready(&mut self, sink: &mut dyn FnMut(JobId, BatchEvent) -> Verdict) {
        self.ready_sent = true;
        self.stats.seconds = self.admitted.elapsed().as_secs_f64();
        sink(self.id, BatchEvent::Ready(self.stats));
    }
}

/// What one job contributes to a step.
enum Part {
    Decode { t: u32, stop: bool },
    Prefill { n: usize },
}

/// Running generations over a pool of resident sessions.
pub struct Scheduler {
    pool: SessionPool,
    jobs: Vec<Active>,
    max_active: usize,
    step_tokens: usize,
    ctx: usize,
    eos: u32,
}

impl Scheduler {
    /// At most `max_active` jobs run at once (clamped to 1..=the pool's capacity, since each
    /// holds a session); prefills share `step_tokens` prompt tokens per step, each in chunks
    /// of its own `prefill_chunk`; states hold
    /// `ctx` tokens; `eos` ends a generation.
    pub fn new(pool: SessionPool, max_active: usize, step_tokens: usize, ctx: usize, eos: u32) -> Scheduler {
        let max_active = max_active.clamp(1, pool.capacity());
        Scheduler { pool, jobs: Vec::new(), max_active, step_tokens: step_tokens.max(1), ctx, eos }
    }

    pub fn pool(&self) -> &SessionPool {
        &self.pool
    }

    /// Jobs admitted and not yet ended.
    pub fn active(&self) -> usize {
        self.jobs.len()
    }

    pub fn max_active(&self) -> usize {
        self.max_active
    }

    /// Whether [`admit`](Self::admit) can take another job now.
    pub fn has_room(&self) -> bool {
        self.jobs.len() < self.max_active && self.pool.has_room()
    }

    /// Starts a job: picks its session (reusing the longest shared prefix, rewinding or
    /// restoring from disk as [`Session`] does for a single generation). Nothing is computed
    /// until the next [`step`](Self::step).
    pub fn admit(
        &mut self,
        runner: &Runner,
        id: JobId,
        prompt: &[u32],
        params: GenerationParams,
        new_session: &dyn Fn() -> Session,
    ) -> Result<Placement, GenError> {
        params.sampling.validate().map_err(GenError::Params)?;
        if prompt.is_empty() || prompt.len() >= self.ctx {
            return Err(GenError::Context { prompt: prompt.len(), ctx: self.ctx });
        }
        if self.jobs.iter().any(|j| j.id == id) {
            return Err(GenError::Model(format!("job {id} is already running")));
        }
        if !self.has_room() {
            return Err(GenError::Model(format!("{} jobs are running, the most at once", self.jobs.len())));
        }
        let admitted = Instant::now();
        let (slot, placement) = self.pool.checkout(runner, prompt, new_session).ok_or_else(|| GenError::Model("every session is busy".into()))?;
        let session = self.pool.session_mut(slot);
        let sampler = Sampler::new(params.sampling.clone());
        let want = sampler.want(false);
        let (common, from_disk) = session.sync(runner, prompt, want);
        let logits = session.take_logits_at(common, prompt.len());
        let todo = prompt[common..].to_vec();
        let stats = PrefillStats { reused: common, from_disk, prefilled: todo.len(), ..PrefillStats::default() };
        self.jobs.push(Active {
            id,
            slot,
            todo,
            done: 0,
            stats,
            admitted,
            sampler,
            params,
            generated: Vec::new(),
            logits,
            ready_sent: false,
            greedy: false,
        });
        Ok(placement)
    }

    /// Ends a job at once (client gone, shutdown): its session keeps what it consumed (with a
    /// checkpoint due when the prompt was in) and is free for the next job. Unknown ids are ignored.
    pub fn cancel(&mut self, id: JobId) {
        if let Some(k) = self.jobs.iter().position(|j| j.id == id) {
            let job = self.jobs.swap_remove(k);
            if job.logits.is_some() {
                self.close(job, Finish::Cancelled);
            } else {
                self.pool.release(job.slot);
            }
        }
    }

    /// One step of every running job. `sink` hears each job's events (answering `Token`s
    /// with the verdict that steers that job's next sample).
    pub fn step(&mut self, runner: &Runner, sink: &mut dyn FnMut(JobId, BatchEvent) -> Verdict) {
        let mut ended: Vec<(usize, Finish)> = Vec::new();
        let mut parts: Vec<(usize, Part)> = Vec::new();
        // Every generating job's next token, side by side (each job draws from its own
        // sampler: the order does not change what it draws); a full-vocabulary softmax is a
        // fraction of a millisecond, eight of them a sizeable part of a CPU decode step.
        let pick = |job: &mut Active| job.logits.as_ref().map(|l| job.sampler.sample_next(l, job.greedy));
        let picks: Vec<Option<Result<u32, String>>> = if self.jobs.iter().filter(|j| j.logits.is_some()).count() > 1 {
            self.jobs.par_iter_mut().map(pick).collect()
        } else {
            self.jobs.iter_mut().map(pick).collect()
        };
        let mut failed: Vec<(usize, String)> = Vec::new();
        for ((k, job), pick) in self.jobs.iter_mut().enumerate().zip(picks) {
            let t = match pick {
                None => continue,
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    failed.push((k, e));
                    continue;
                }
            };
            if !job.ready_sent {
                job.announce_ready(sink);
            }
            if t == self.eos {
                ended.push((k, Finish::Eos));
                continue;
            }
            let v = sink(job.id, BatchEvent::Token(t));
            job.greedy = v.greedy;
            parts.push((k, Part::Decode { t, stop: v.stop }));
        }
        // Prefills, shortest remaining first, share the step's budget. A job's prompt is cut
        // where it would be cut alone (its own chunk size and checkpoint boundaries), never
        // where the budget runs out: on a device whose multi-token and one-token paths round
        // differently, cut points would otherwise make results depend on the other jobs.
        let mut waiting: Vec<usize> = (0..self.jobs.len()).filter(|&k| self.jobs[k].logits.is_none()).collect();
        waiting.sort_by_key(|&k| self.jobs[k].todo.len() - self.jobs[k].done);
        let mut budget = self.step_tokens;
        for k in waiting {
            let job = &self.jobs[k];
            let n = self.pool.session_mut(job.slot).chunk_len(job.todo.len() - job.done, job.params.prefill_chunk);
            // The first prefill of a step always runs, so a chunk larger than the budget
            // still makes progress.
            if n > budget && budget < self.step_tokens {
                break;
            }
            budget = budget.saturating_sub(n);
            parts.push((k, Part::Prefill { n }));
        }

        // Sessions get their device state on first use; one that cannot is this job's failure.
        parts.retain(|&(k, _)| match self.pool.session_mut(self.jobs[k].slot).state_mut(runner) {
            Ok(_) => true,
            Err(e) => {
                failed.push((k, e.to_string()));
                false
            }
        });
        // One batched call per numerics mode (every job of a server shares one).
        let mut modes = Vec::new();
        for &(k, _) in &parts {
            if !modes.contains(&self.jobs[k].params.numerics) {
                modes.push(self.jobs[k].params.numerics);
            }
        }
        let mut results: Vec<Option<Next>> = vec![None; parts.len()];
        for mode in modes {
            let members: Vec<usize> = (0..parts.len()).filter(|&i| self.jobs[parts[i].0].params.numerics == mode).collect();
            let slots: Vec<usize> = members.iter().map(|&i| self.jobs[parts[i].0].slot).collect();
            let tokens: Vec<Vec<u32>> = members
                .iter()
                .map(|&i| match parts[i].1 {
                    Part::Decode { t, .. } => vec![t],
                    Part::Prefill { n } => {
                        let job = &self.jobs[parts[i].0];
                        job.todo[job.done..job.done + n].to_vec()
                    }
                })
                .collect();
            let token_refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
            // What each job's next draw needs from this call's logits (a decoding job's
            // verdict on its last token is in; a prefilling one has drawn nothing yet).
            let wants: Vec<Want> = members
                .iter()
                .map(|&i| {
                    let job = &self.jobs[parts[i].0];
                    job.sampler.want(job.greedy)
                })
                .collect();
            let mut sessions = self.pool.sessions_mut(&slots);
            let mut states: Vec<&mut State> = sessions.iter_mut().map(|s| s.state.as_mut().expect("created above")).collect();
            match runner.forward_batch(&mut states, &token_refs, &wants, mode) {
                Ok(rows) => {
                    for (i, row) in members.into_iter().zip(rows) {
                        results[i] = Some(row);
                    }
                }
                Err(e) => failed.extend(members.into_iter().map(|i| (parts[i].0, e.clone()))),
            }
        }

        for ((k, part), row) in parts.into_iter().zip(results) {
            let Some(row) = row else { continue };
            let job = &mut self.jobs[k];
            let session = self.pool.session_mut(job.slot);
            match part {
                Part::Decode { t, stop } => {
                    session.consumed_sample(runner, t);
                    job.generated.push(t);
                    job.logits = Some(row);
                    let guard = job.params.loop_guard.as_ref().is_some_and(|g| g.looping(&job.generated));
                    if stop {
                        ended.push((k, Finish::Stop));
                    } else if guard {
                        ended.push((k, Finish::Loop));
                    } else if job.generated.len() >= job.params.max_tokens.max(1) || session.tokens.len() + 1 >= self.ctx {
                        ended.push((k, Finish::Length));
                    }
                }
                Part::Prefill { n } => {
                    let chunk = &job.todo[job.done..job.done + n];
                    job.done += n;
                    let saved = session.consumed_prompt(runner, chunk, job.todo.len() - job.done);
                    job.stats.saved_to_disk = job.stats.saved_to_disk.max(saved);
                    if job.done == job.todo.len() {
                        job.logits = Some(row);
                        job.announce_ready(sink);
                    }
                }
            }
        }

        // Remove ended and failed jobs, highest index first so the others keep theirs.
        let mut gone: Vec<(usize, Result<Finish, String>)> =
            ended.into_iter().map(|(k, f)| (k, Ok(f))).chain(failed.into_iter().map(|(k, e)| (k, Err(e)))).collect();
        gone.sort_by_key(|g| std::cmp::Reverse(g.0));
        for (k, outcome) in gone {
            let job = self.jobs.remove(k);
            let id = job.id;
            match outcome {
                Ok(finish) => {
                    self.close(job, finish);
                    sink(id, BatchEvent::Finished(finish));
                }
                Err(e) => {
                    // The state may hold part of the failed step: start that session over.
                    self.pool.session_mut(job.slot).reset();
                    self.pool.release(job.slot);
                    sink(id, BatchEvent::Failed(e));
                }
            }
        }
    }

    /// Saves every resident session to the disk cache (shutdown); returns tokens written.
    pub fn save_all(&self, runner: &Runner) -> usize {
        self.pool.save_all(runner)
    }

    /// The end of an answer, where the next turn's prompt diverges if it is edited: a
    /// checkpoint, taken when the session next moves on (the batch does not wait for it now),
    /// and the logits kept for a regenerate (none after the end-of-sentence token, which the
    /// session never consumed).
    fn close(&mut self, mut job: Active, finish: Finish) {
        let session = self.pool.session_mut(job.slot);
        session.checkpoint_here();
        session.last_logits = if finish == Finish::Eos { None } else { job.logits.take() };
        self.pool.release(job.slot);
    }
}
