//! Resident sessions: several live sessions kept in memory so that an agent's side requests
//! (titles, sub-agents, a second agent) do not evict its main conversation.
//!
//! A prompt goes to the session sharing its longest token prefix. A prompt that extends that
//! session continues it. One that diverges from it (a sub-agent sharing only the system
//! prompt, a title request sharing nothing, a regenerate) gets its own session while there is
//! room: a copy of the best one cut back to the shared prefix, so the original keeps its tail.
//! When the pool is full, a short divergence in a session the prompt mostly shares rewinds
//! that session in place; anything else replaces the least recently used session.
//!
//! Sessions in use by a running generation are busy: they are never rewound, replaced or
//! evicted, only copied from (a sub-agent forking from a main agent that is still answering).

use crate::generate::Session;
use crate::runner::Runner;

/// Rewinding a session by at most this many tokens, or an eighth of it when longer, is
/// cheaper than keeping its tail: regenerating an answer loses the answer, nothing else.
const IN_PLACE_LOSS: usize = 1024;

struct Slot {
    session: Session,
    last_used: u64,
    busy: bool,
}

/// How [`SessionPool::acquire`] chose the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The session holds a prefix of the prompt (or is the one being rewound in place).
    Reused { common: usize },
    /// A copy of another session, cut back to the shared prefix.
    Forked { common: usize },
    /// A new empty session.
    Fresh,
}

/// At most `capacity` sessions, reused by longest common prefix, evicted least recently used.
pub struct SessionPool {
    slots: Vec<Slot>,
    capacity: usize,
    clock: u64,
}

impl SessionPool {
    /// `capacity` is clamped to at least 1.
    pub fn new(capacity: usize) -> SessionPool {
        SessionPool { slots: Vec::new(), capacity: capacity.max(1), clock: 0 }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The most sessions kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The resident sessions, in no particular order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().map(|s| &s.session)
    }

    /// Whether [`checkout`](Self::checkout) can place a prompt now: a slot is free or idle.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.capacity || self.slots.iter().any(|s| !s.busy)
    }

    /// Sessions in use by running generations.
    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.busy).count()
    }

    /// The session `prompt` should run on, for a one-off use (it stays idle: the next call
    /// may rewind or replace it). See [`checkout`](Self::checkout).
    pub fn acquire(&mut self, runner: &Runner, prompt: &[u32], new_session: &dyn Fn() -> Session) -> (&mut Session, Placement) {
        let (idx, placement) = self.checkout(runner, prompt, new_session).expect("an idle pool always has room");
        self.release(idx);
        (&mut self.slots[idx].session, placement)
    }

    /// Picks the slot `prompt` should run on and marks it busy until [`release`](Self::release);
    /// `None` when every slot is busy. `new_session` makes an empty session (with the disk
    /// cache attached); an evicted session is first saved to disk when it has one. A slot's
    /// index stays valid while it is busy.
    pub fn checkout(&mut self, runner: &Runner, prompt: &[u32], new_session: &dyn Fn() -> Session) -> Option<(usize, Placement)> {
        if !self.has_room() {
            return None;
        }
        self.clock += 1;
        let now = self.clock;
        let best = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.session.common_prefix(prompt)))
            .max_by_key(|&(i, common)| (common, !self.slots[i].busy, self.slots[i].last_used));
        let (idx, placement) = match best {
            Some((i, common)) if common > 0 => {
                let held = self.slots[i].session.tokens.len();
                let loss = held - common;
                // Keep the tail whenever there is room: the prompt may be a side request that
                // shares only a system prompt, and a fork costs memory, not compute. When full,
                // rewind in place only for a short divergence in a session the prompt mostly
                // shares (regenerate, an edited last turn); otherwise the least recently used
                // idle session makes room. A busy session is only ever copied.
                let full = self.slots.len() == self.capacity;
                let in_place = !self.slots[i].busy
                    && (loss == 0 || self.capacity == 1 || (full && loss <= IN_PLACE_LOSS.max(held / 8) && common * 2 >= held));
                // With no other slot to fork into, an idle best session is rewound in place.
                let target = if in_place { None } else { self.free_slot(runner, Some(i)) };
                match target {
                    None if self.slots[i].busy => return None,
                    None => (i, Placement::Reused { common }),
                    Some(target) => {
                        let mut fork = self.slots[i].session.fork(runner);
                        let kept = fork.rewind(runner, common);
                        let placement = if kept > 0 { Placement::Forked { common: kept } } else { Placement::Fresh };
                        self.put(target, fork);
                        (target, placement)
                    }
                }
            }
            _ => {
                let target = self.free_slot(runner, None)?;
                self.put(target, new_session());
                (target, Placement::Fresh)
            }
        };
        self.slots[idx].last_used = now;
        self.slots[idx].busy = true;
        Some((idx, placement))
    }

    /// The session in slot `idx` (from [`checkout`](Self::checkout)).
    pub fn session_mut(&mut self, idx: usize) -> &mut Session {
        &mut self.slots[idx].session
    }

    /// The sessions in slots `idxs` (distinct), in that order, for one batched step.
    pub fn sessions_mut(&mut self, idxs: &[usize]) -> Vec<&mut Session> {
        let mut found: Vec<Option<&mut Session>> = (0..idxs.len()).map(|_| None).collect();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(k) = idxs.iter().position(|&x| x == i) {
                found[k] = Some(&mut slot.session);
            }
        }
        found.into_iter().map(|s| s.expect("slot indices come from checkout and are distinct")).collect()
    }

    /// The generation on slot `idx` ended: the session may be reused, rewound or evicted.
    pub fn release(&mut self, idx: usize) {
        if let Some(s) = self.slots.get_mut(idx) {
            s.busy = false;
        }
    }

    /// Saves every resident session to its disk cache (shutdown) and waits for the writes;
    /// returns the tokens saved.
    pub fn save_all(&self, runner: &Runner) -> usize {
        let saved = self.slots.iter().map(|s| s.session.save_to_disk(runner)).sum();
        for s in &self.slots {
            if let Some(d) = s.session.disk() {
                d.flush();
            }
        }
        saved
    }

    /// Index of a slot to fill: a new one while under capacity, else the least recently
    /// used idle one other than `keep` (saved to disk before it goes).
    fn free_slot(&mut self, runner: &Runner, keep: Option<usize>) -> Option<usize> {
        if self.slots.len() < self.capacity {
            return Some(self.slots.len());
        }
        let victim = (0..self.slots.len()).filter(|&i| Some(i) != keep && !self.slots[i].busy).min_by_key(|&i| self.slots[i].last_used)?;
        self.slots[victim].session.save_to_disk(runner);
        Some(victim)
    }

    fn put(&mut self, idx: usize, session: Session) {
        let slot = Slot { session, last_used: self.clock, busy: false };
        if idx == self.slots.len() {
            self.slots.push(slot);
        } else {
            self.slots[idx] = slot;
        }
    }
}
