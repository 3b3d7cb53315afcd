//! Resident sessions: several live sessions kept in memory so that an agent's side requests
//! (titles, sub-agents, a second agent) do not evict its main conversation.
//!
//! A prompt goes to the session sharing its longest token prefix. A prompt that extends that
//! session continues it. One that diverges from it (a sub-agent sharing only the system
//! prompt, a title request sharing nothing, a regenerate) gets its own session while there is
//! room: a copy of the best one cut back to the shared prefix, so the original keeps its tail.
//! When the pool is full, a short divergence in a session the prompt mostly shares rewinds
//! that session in place; anything else replaces the least recently used session.

use crate::generate::Session;
use crate::runner::Runner;

/// Rewinding a session by at most this many tokens, or an eighth of it when longer, is
/// cheaper than keeping its tail: regenerating an answer loses the answer, nothing else.
const IN_PLACE_LOSS: usize = 1024;

struct Slot {
    session: Session,
    last_used: u64,
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

impl Placement {
    /// Tokens the chosen session already shares with the prompt.
    pub fn common(self) -> usize {
        match self {
            Placement::Reused { common } | Placement::Forked { common } => common,
            Placement::Fresh => 0,
        }
    }
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

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The resident sessions, in no particular order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().map(|s| &s.session)
    }

    /// The session `prompt` should run on. `new_session` makes an empty one (with the disk
    /// cache attached); an evicted session is first saved to disk when it has one.
    pub fn acquire(
        &mut self,
        runner: &Runner,
        prompt: &[u32],
        new_session: &dyn Fn() -> Session,
    ) -> (&mut Session, Placement) {
        self.clock += 1;
        let now = self.clock;
        let best = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.session.common_prefix(prompt)))
            .max_by_key(|&(i, common)| (common, self.slots[i].last_used));
        let (idx, placement) = match best {
            Some((i, common)) if common > 0 => {
                let held = self.slots[i].session.tokens.len();
                let loss = held - common;
                // Keep the tail whenever there is room: the prompt may be a side request that
                // shares only a system prompt, and a fork costs memory, not compute. When full,
                // rewind in place only for a short divergence in a session the prompt mostly
                // shares (regenerate, an edited last turn); otherwise the least recently used
                // session makes room.
                let in_place = loss == 0
                    || self.capacity == 1
                    || (self.slots.len() == self.capacity && loss <= IN_PLACE_LOSS.max(held / 8) && common * 2 >= held);
                if in_place {
                    (i, Placement::Reused { common })
                } else {
                    let mut fork = self.slots[i].session.fork(runner);
                    let kept = fork.rewind(runner, common);
                    let placement = if kept > 0 { Placement::Forked { common: kept } } else { Placement::Fresh };
                    let target = self.free_slot(runner, Some(i));
                    self.put(target, fork);
                    (target, placement)
                }
            }
            _ => {
                let target = self.free_slot(runner, None);
                self.put(target, new_session());
                (target, Placement::Fresh)
            }
        };
        self.slots[idx].last_used = now;
        (&mut self.slots[idx].session, placement)
    }

    /// Saves every resident session to its disk cache (shutdown); returns tokens written.
    pub fn save_all(&self, runner: &Runner) -> usize {
        self.slots.iter().map(|s| s.session.save_to_disk(runner)).sum()
    }

    /// Index of a slot to fill: a new one while under capacity, else the least recently
    /// used one other than `keep` (saved to disk before it goes).
    fn free_slot(&mut self, runner: &Runner, keep: Option<usize>) -> usize {
        if self.slots.len() < self.capacity {
            return self.slots.len();
        }
        let victim = (0..self.slots.len())
            .filter(|&i| Some(i) != keep)
            .min_by_key(|&i| self.slots[i].last_used)
            .unwrap_or(0);
        self.slots[victim].session.save_to_disk(runner);
        victim
    }

    fn put(&mut self, idx: usize, session: Session) {
        let slot = Slot { session, last_used: self.clock };
        if idx == self.slots.len() {
            self.slots.push(slot);
        } else {
            self.slots[idx] = slot;
        }
    }
}
