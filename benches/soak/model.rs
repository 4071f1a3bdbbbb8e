//! The fault schedule replayed: the state of the fleet at any moment (which nodes run,
//! which links are cut, whether Redis runs), and from it, for an acknowledged revocation,
//! the earliest moment each node could have learnt it:
//!
//! - peers: the node that took it holds it from its acknowledgement. A peer gets it by
//!   the push at once if the link from the taking node to it stays up (both running)
//!   for `push_window` after the acknowledgement; otherwise, and from then on, any
//!   running node learns it as soon as its own link to a running node that holds it is
//!   up (anti-entropy pulls), and then holds it too (it is durable there).
//! - Redis: the revocation is in Redis at its acknowledgement if it was published (200),
//!   else once the taking node is connected to Redis again (its outbox is flushed); a
//!   node learns it once it is connected to Redis from then on. "Connected" means
//!   running, its link up and Redis running, for at least `reconnect` already (the tail
//!   reconnects with a backoff of up to 2 s).
//!
//! And whether a node is cut off (from every peer, or from Redis), since when.

use crate::history::{Event, History, Revocation, T};

#[derive(Clone, Debug)]
pub struct State {
    pub up: Vec<bool>,
    pub cut: Vec<Vec<bool>>,
    pub redis_up: bool,
    /// Started again but not yet seen answering: a node may already have reached it.
    pub redis_starting: bool,
    pub rcut: Vec<bool>,
}

pub struct Params {
    /// How long after it could have learnt a revocation a node may still accept.
    pub grace: T,
    pub push_window: T,
    pub reconnect: T,
    pub max_staleness: T,
}

pub struct Timeline {
    n: usize,
    redis: bool,
    /// states[k] holds from times[k] (times[0] is the beginning of time).
    times: Vec<T>,
    states: Vec<State>,
    /// Per node, the intervals during which it is connected to Redis.
    connected: Vec<Vec<(T, T)>>,
    /// Per node, the intervals during which it runs but is cut off.
    isolated: Vec<Vec<(T, T)>>,
}

impl Timeline {
    pub fn new(h: &History) -> Timeline {
        let n = h.nodes;
        let mut st = State {
            up: vec![true; n],
            cut: vec![vec![false; n]; n],
            redis_up: h.redis,
            redis_starting: false,
            rcut: vec![false; n],
        };
        let mut times = vec![T::MIN];
        let mut states = vec![st.clone()];
        let mut events: Vec<&(T, Event, String)> = h.events.iter().collect();
        events.sort_by_key(|e| e.0);
        for (t, e, _) in events {
            match *e {
                Event::NodeDown(i) => st.up[i] = false,
                Event::NodeUp(i) => st.up[i] = true,
                Event::Cut(a, b) => st.cut[a][b] = true,
                Event::Heal(a, b) => st.cut[a][b] = false,
                Event::RedisCut(i) => st.rcut[i] = true,
                Event::RedisHeal(i) => st.rcut[i] = false,
                Event::RedisDown => (st.redis_up, st.redis_starting) = (false, false),
                Event::RedisStarting => st.redis_starting = true,
                Event::RedisUp => (st.redis_up, st.redis_starting) = (true, false),
                Event::Clock(..) | Event::FaultStart | Event::FaultEnd => continue,
            }
            times.push(*t);
            states.push(st.clone());
        }
        let mut tl = Timeline {
            n,
            redis: h.redis,
            times,
            states,
            connected: Vec::new(),
            isolated: Vec::new(),
        };
        tl.connected = (0..n)
            .map(|i| tl.intervals(|s| s.up[i] && !s.rcut[i] && s.redis_up))
            .collect();
        tl.isolated = (0..n).map(|i| tl.intervals(|s| tl.cut_off(s, i))).collect();
        tl
    }

    fn idx(&self, t: T) -> usize {
        self.times.partition_point(|x| *x <= t).saturating_sub(1)
    }

    /// Running, but unable to hear from any peer (or from Redis).
    fn cut_off(&self, s: &State, i: usize) -> bool {
        if !s.up[i] {
            return false;
        }
        if self.redis {
            return s.rcut[i] || !(s.redis_up || s.redis_starting);
        }
        (0..self.n)
            .filter(|p| *p != i)
            .all(|p| !s.up[p] || s.cut[i][p])
    }

    /// The maximal intervals during which `pred` holds.
    fn intervals(&self, pred: impl Fn(&State) -> bool) -> Vec<(T, T)> {
        let mut out = Vec::new();
        let mut open: Option<T> = None;
        for (k, s) in self.states.iter().enumerate() {
            match (pred(s), open) {
                (true, None) => open = Some(self.times[k]),
                (false, Some(start)) => {
                    out.push((start, self.times[k]));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            out.push((start, T::MAX));
        }
        out
    }

    /// The earliest t >= t0 inside one of `ivs` at least `d` after that interval began.
    fn earliest(ivs: &[(T, T)], t0: T, d: T) -> Option<T> {
        ivs.iter().find_map(|&(s, e)| {
            let t = t0.max(s.saturating_add(d));
            (t < e).then_some(t)
        })
    }

    /// Whether node `i` ran from `from` to `to` without going down or being cut off
    /// (from every peer, or from Redis), when it may refuse for staleness.
    pub fn healthy_throughout(&self, i: usize, from: T, to: T) -> bool {
        let (a, b) = (self.idx(from), self.idx(to));
        self.states[a..=b]
            .iter()
            .all(|s| s.up[i] && !self.cut_off(s, i))
    }

    /// Since when node `i` has been cut off without a break, if it is at `t`.
    pub fn cut_off_since(&self, i: usize, t: T) -> Option<T> {
        self.isolated[i]
            .iter()
            .find(|&&(s, e)| s <= t && t < e)
            .map(|&(s, _)| s)
    }

    /// For each node, the earliest moment it could have learnt revocation `r`
    /// (None: not before the history ends, or `r` has no acknowledgement or node).
    pub fn learn_times(&self, r: &Revocation, p: &Params) -> Vec<Option<T>> {
        let mut l = vec![None; self.n];
        let (Some(o), Some(ack)) = (r.node, r.ack.as_ref()) else {
            return l;
        };
        let t = r.done;
        l[o] = Some(t);
        if self.redis {
            let t_in = if ack.propagated {
                Some(t)
            } else {
                Self::earliest(&self.connected[o], t, p.reconnect)
            };
            if let Some(t_in) = t_in {
                for (i, li) in l.iter_mut().enumerate() {
                    if i != o {
                        *li = Self::earliest(&self.connected[i], t_in, p.reconnect);
                    }
                }
            }
            return l;
        }
        for (i, li) in l.iter_mut().enumerate() {
            if i != o && self.push_reaches(o, i, t, p.push_window) {
                *li = Some(t);
            }
        }
        let mut k = self.idx(t);
        let mut s = t;
        loop {
            self.pull_closure(&mut l, &self.states[k], s);
            k += 1;
            if k >= self.times.len() || l.iter().all(Option::is_some) {
                return l;
            }
            s = self.times[k];
        }
    }

    /// Whether node `i` could learn revocation `r` straight from the node that took it at
    /// its acknowledgement, with no fault in the way: peers, the push got through; Redis,
    /// it was published and `i` was connected then.
    pub fn direct(&self, r: &Revocation, i: usize, l: T, p: &Params) -> bool {
        match (self.redis, r.node) {
            (true, _) => l == r.done,
            (false, Some(o)) => self.push_reaches(o, i, r.done, p.push_window),
            (false, None) => false,
        }
    }

    /// Whether the push from `o` to `i` at `t` got through: both running and the link
    /// up for the whole window.
    fn push_reaches(&self, o: usize, i: usize, t: T, window: T) -> bool {
        let (a, b) = (self.idx(t), self.idx(t.saturating_add(window)));
        self.states[a..=b]
            .iter()
            .all(|s| s.up[o] && s.up[i] && !s.cut[o][i])
    }

    /// In state `s` (from time `at`), every running node with an open link to a running
    /// holder becomes a holder.
    fn pull_closure(&self, l: &mut [Option<T>], s: &State, at: T) {
        loop {
            let mut changed = false;
            for i in 0..self.n {
                if l[i].is_some() || !s.up[i] {
                    continue;
                }
                let reachable = (0..self.n)
                    .any(|h| h != i && l[h].is_some_and(|x| x <= at) && s.up[h] && !s.cut[i][h]);
                if reachable {
                    l[i] = Some(at);
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }
}
