//! Counters per trigger (`scim:<name>`, `ssf:<name>`, `hook:<name>`): deliveries
//! received, revocations and flag changes applied, deliveries refused by reason, and
//! deliveries acknowledged without effect by reason (replays, unknown events).

use crate::metrics::{Kind, Writer};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Family {
    Received,
    Applied,
    Refused,
    Ignored,
}

/// Label sets are few (a trigger per configured table, a handful of reasons), so one
/// map keyed by (family, trigger, reason) is enough.
#[derive(Default)]
pub struct TriggerMetrics {
    counts: DashMap<(Family, String, String), AtomicU64>,
}

impl TriggerMetrics {
    fn add(&self, f: Family, trigger: &str, reason: &str, n: u64) {
        if n == 0 {
            return;
        }
        let key = (f, trigger.to_string(), reason.to_string());
        if let Some(c) = self.counts.get(&key) {
            c.fetch_add(n, Ordering::Relaxed);
            return;
        }
        self.counts
            .entry(key)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn received(&self, trigger: &str) {
        self.add(Family::Received, trigger, "", 1);
    }
    pub fn applied(&self, trigger: &str, n: u64) {
        self.add(Family::Applied, trigger, "", n);
    }
    pub fn refused(&self, trigger: &str, reason: &str) {
        self.add(Family::Refused, trigger, reason, 1);
    }
    pub fn ignored(&self, trigger: &str, reason: &str) {
        self.add(Family::Ignored, trigger, reason, 1);
    }

    /// A counter's value (tests and the metrics page).
    pub fn get(&self, f: &str, trigger: &str, reason: &str) -> u64 {
        let fam = match f {
            "received" => Family::Received,
            "applied" => Family::Applied,
            "refused" => Family::Refused,
            _ => Family::Ignored,
        };
        self.counts
            .get(&(fam, trigger.to_string(), reason.to_string()))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn samples(&self, f: Family) -> Vec<(String, String, u64)> {
        let mut v: Vec<(String, String, u64)> = self
            .counts
            .iter()
            .filter(|e| e.key().0 == f)
            .map(|e| {
                (
                    e.key().1.clone(),
                    e.key().2.clone(),
                    e.value().load(Ordering::Relaxed),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The four families on the metrics page.
    pub fn write(&self, w: &mut Writer) {
        let families = [
            (
                Family::Received,
                "portcullis_signals_received_total",
                "Revocation signals received, by trigger (scim:, ssf:, hook:).",
            ),
            (
                Family::Applied,
                "portcullis_signals_applied_total",
                "Revocations and account flag changes applied from signals, by trigger.",
            ),
            (
                Family::Refused,
                "portcullis_signals_refused_total",
                "Signals refused (not authenticated, not valid), by trigger and reason.",
            ),
            (
                Family::Ignored,
                "portcullis_signals_ignored_total",
                "Signals acknowledged without effect (replays, unknown events or subjects), by trigger and reason.",
            ),
        ];
        for (f, name, help) in families {
            let rows = self.samples(f);
            let with_reason = matches!(f, Family::Refused | Family::Ignored);
            let labels: Vec<Vec<(&str, &str)>> = rows
                .iter()
                .map(|(t, r, _)| {
                    let mut l = vec![("trigger", t.as_str())];
                    if with_reason {
                        l.push(("reason", r.as_str()));
                    }
                    l
                })
                .collect();
            w.family(
                name,
                help,
                Kind::Counter,
                labels.iter().zip(&rows).map(|(l, r)| (&l[..], r.2)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_sample_per_trigger_and_reason() {
        let m = TriggerMetrics::default();
        m.received("hook:splunk");
        m.received("hook:splunk");
        m.refused("hook:splunk", "stale");
        m.applied("scim:okta", 2);
        m.ignored("ssf:okta", "replayed");
        let mut w = Writer::default();
        m.write(&mut w);
        let text = w.finish();
        assert!(text.contains("portcullis_signals_received_total{trigger=\"hook:splunk\"} 2\n"));
        assert!(text.contains(
            "portcullis_signals_refused_total{trigger=\"hook:splunk\",reason=\"stale\"} 1\n"
        ));
        assert!(text.contains("portcullis_signals_applied_total{trigger=\"scim:okta\"} 2\n"));
        assert!(text.contains(
            "portcullis_signals_ignored_total{trigger=\"ssf:okta\",reason=\"replayed\"} 1\n"
        ));
        assert_eq!(m.get("received", "hook:splunk", ""), 2);
    }
}
