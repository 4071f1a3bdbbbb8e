//! Connection caps, decided at accept before any byte is read: a total for the
//! listener (or listeners) and a share per client address, so one client cannot take
//! every socket or file descriptor. A [`Permit`] stands for one open connection; it
//! travels inside the connection's IO (into a WebSocket tunnel too) and gives the slot
//! back when dropped.
//!
//! IPv6 clients are counted per /64: one host usually holds a whole /64.

use crate::metrics::{self, Metrics};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Which listener a gate guards (it decides which counters move).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The HTTPS and plaintext data-plane listeners, together.
    Data,
    Control,
}

/// Why a connection was closed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerAddress,
}

/// The caps in force for one accept (read from the live config each time).
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub total: usize,
    /// `None`: no per-address cap (the control port, trusted proxies).
    pub per_address: Option<usize>,
}

pub struct Admission {
    gate: Gate,
    open: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
    metrics: Arc<Metrics>,
}

/// One admitted connection; dropping it frees the slot.
pub struct Permit {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("address", &self.address)
            .finish()
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Admission {
    pub fn new(gate: Gate, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            gate,
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::default()),
            metrics,
        })
    }

    fn gauge(&self) -> &AtomicU64 {
        match self.gate {
            Gate::Data => &self.metrics.limits.connections_open,
            Gate::Control => &self.metrics.limits.control_connections_open,
        }
    }

    /// Admits a connection from `ip` under `caps`, or says why not (and counts it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, caps: Caps) -> Result<Permit, Refusal> {
        let took = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < caps.total).then_some(n + 1)
            });
        if took.is_err() {
            self.refused(Refusal::Total);
            return Err(Refusal::Total);
        }
        let address = match caps.per_address {
            None => None,
            Some(max) => {
                let key = bucket(ip);
                let mut map = self
                    .by_address
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let n = map.entry(key).or_insert(0);
                if *n >= max {
                    drop(map);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    self.refused(Refusal::PerAddress);
                    return Err(Refusal::PerAddress);
                }
                *n += 1;
                Some(key)
            }
        };
        metrics::inc(self.gauge());
        Ok(Permit {
            admission: self.clone(),
            address,
        })
    }

    fn refused(&self, why: Refusal) {
        let l = &self.metrics.limits;
        metrics::inc(match (self.gate, why) {
            (Gate::Control, _) => &l.refused_control,
            (Gate::Data, Refusal::Total) => &l.refused_total,
            (Gate::Data, Refusal::PerAddress) => &l.refused_per_address,
        });
    }

    /// Open connections admitted by this gate.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Client addresses with at least one open connection (bounded by the total cap).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let a = &self.admission;
        if let Some(key) = self.address {
            let mut map = a.by_address.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        a.open.fetch_sub(1, Ordering::AcqRel);
        metrics::dec(a.gauge());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per: usize) -> Caps {
        Caps {
            total,
            per_address: Some(per),
        }
    }

    #[test]
    fn caps_total_and_per_address_and_frees_on_drop() {
        let m = Arc::new(Metrics::default());
        let a = Admission::new(Gate::Data, m.clone());
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = a.admit(one, caps(3, 2)).unwrap();
        let p2 = a.admit(one, caps(3, 2)).unwrap();
        assert_eq!(a.admit(one, caps(3, 2)).unwrap_err(), Refusal::PerAddress);
        let p3 = a.admit(two, caps(3, 2)).unwrap();
        assert_eq!(a.admit(two, caps(3, 2)).unwrap_err(), Refusal::Total);
        assert_eq!((a.open(), a.addresses()), (3, 2));
        assert_eq!(metrics::get(&m.limits.connections_open), 3);
        drop((p1, p2));
        assert_eq!((a.open(), a.addresses()), (1, 1));
        let _p4 = a.admit(one, caps(3, 2)).unwrap();
        drop(p3);
        assert_eq!(metrics::get(&m.limits.refused_per_address), 1);
        assert_eq!(metrics::get(&m.limits.refused_total), 1);
        assert_eq!(metrics::get(&m.limits.connections_open), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let m = Arc::new(Metrics::default());
        let a = Admission::new(Gate::Data, m);
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _p = a.admit(x, caps(10, 1)).unwrap();
        assert_eq!(a.admit(y, caps(10, 1)).unwrap_err(), Refusal::PerAddress);
        let v4: IpAddr = "10.1.1.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.1.1".parse().unwrap();
        let _q = a.admit(v4, caps(10, 1)).unwrap();
        assert_eq!(
            a.admit(mapped, caps(10, 1)).unwrap_err(),
            Refusal::PerAddress
        );
    }

    #[test]
    fn no_per_address_cap_when_none() {
        let a = Admission::new(Gate::Control, Arc::new(Metrics::default()));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let caps = Caps {
            total: 2,
            per_address: None,
        };
        let _a = a.admit(ip, caps).unwrap();
        let _b = a.admit(ip, caps).unwrap();
        assert_eq!(a.admit(ip, caps).unwrap_err(), Refusal::Total);
        assert_eq!(a.addresses(), 0);
    }
}
