//! Idle origin connections, one pool per worker thread: checking a connection out or
//! back in takes no lock and touches no memory another thread writes.

use super::Conn;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle connections kept per origin per thread.
const MAX_IDLE: usize = 1024;
/// How long a connection may sit idle before it is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Idle = Vec<(Conn, Instant)>;

thread_local! {
    static POOL: RefCell<HashMap<Arc<str>, Idle, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// The most recently used live connection to `key`, if any.
pub(super) fn take(key: &str) -> Option<Conn> {
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(key)?;
        while let Some((c, since)) = idle.pop() {
            if since.elapsed() > IDLE_TIMEOUT {
                // Every older entry has been idle even longer.
                idle.clear();
                return None;
            }
            if still_open(&c) {
                return Some(c);
            }
        }
        None
    })
}

/// Returns a connection for reuse when `reusable`; otherwise it is closed.
pub(super) fn put_if(reusable: bool, key: &Arc<str>, c: Conn) {
    if !reusable {
        return;
    }
    // At thread exit the pool is gone and the connection is simply closed.
    let _ = POOL.try_with(|p| {
        let mut pool = p.borrow_mut();
        let entry = (c, Instant::now());
        match pool.get_mut(&**key) {
            Some(idle) if idle.len() >= MAX_IDLE => {}
            Some(idle) => idle.push(entry),
            None => {
                pool.insert(key.clone(), vec![entry]);
            }
        }
    });
}

/// An idle connection the origin closed (or wrote to out of turn) is readable; this
/// costs no system call unless the runtime has seen the socket become readable.
fn still_open(c: &Conn) -> bool {
    let mut probe = [0u8; 1];
    matches!(c.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
