//! What the local fakes of cloud services (`pym-fake-aws`, `pym-fake-gcp`, `pym-fake-kube`)
//! share, one copy of each: a server's runtime and serial numbers, HTTP and Host-routed
//! front doors on loopback (`net`), the `docker` CLI (`docker`), injected faults, RFC 3339
//! times (`time`), base64 (`base64`), the call log of the test hooks and the binaries'
//! command lines (`cli`).
//!
//! Only what is the same logic in every fake lives here; each protocol (wire formats,
//! errors, routing rules, what a call log records) stays in its fake.

pub mod base64;
pub mod cli;
pub mod docker;
pub mod net;
pub mod oidc;
pub mod time;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// A server's own runtime: two worker threads named `name`.
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(name)
        .build()
}

/// Blocks until Ctrl-C or SIGTERM (for the standalone binaries).
pub fn wait_for_signal(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}

/// A server's serial numbers (from 1), and random-looking numbers made from them and the
/// clock.
pub struct Ids(AtomicU64);

impl Default for Ids {
    fn default() -> Ids {
        Ids(AtomicU64::new(1))
    }
}

impl Ids {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }

    /// A random-looking 64-bit number (UUIDs, suffixes, traffic splits).
    pub fn random(&self) -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x = nanos
            ^ self.next().wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(std::process::id()) << 32;
        // splitmix64 finaliser
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    /// A random (version 4) UUID.
    pub fn uuid(&self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Injected errors (`F`: what a fake answers with and which calls it matches), each for
/// the next so many calls it matches, or for every one.
pub struct Faults<F>(Vec<(F, Option<u32>)>);

impl<F> Default for Faults<F> {
    fn default() -> Faults<F> {
        Faults(Vec::new())
    }
}

impl<F: Clone> Faults<F> {
    /// Adds a fault for the next `times` calls it matches (`None`: every call; `Some(0)`:
    /// none, so it is not kept).
    pub fn add(&mut self, fault: F, times: Option<u32>) {
        if times != Some(0) {
            self.0.push((fault, times));
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The first fault that `matches` a call, counted as used once: it goes when its times
    /// are used up.
    pub fn hit(&mut self, matches: impl Fn(&F) -> bool) -> Option<F> {
        let i = self.0.iter().position(|(f, _)| matches(f))?;
        let (f, times) = &mut self.0[i];
        let hit = f.clone();
        if let Some(t) = times {
            *t = t.saturating_sub(1);
            if *t == 0 {
                self.0.remove(i);
            }
        }
        Some(hit)
    }
}

/// The calls a fake answered, for its test hooks: each one in order, and how many per key
/// (a method, a verb and resource).
#[derive(Default)]
pub struct CallLog {
    calls: Vec<Value>,
    counts: BTreeMap<String, u64>,
}

impl CallLog {
    pub fn record(&mut self, key: String, call: Value) {
        self.calls.push(call);
        *self.counts.entry(key).or_default() += 1;
    }

    pub fn clear(&mut self) {
        self.calls.clear();
        self.counts.clear();
    }

    /// `{"calls": [...], "counts": {key: n}}`
    pub fn json(&self) -> Value {
        json!({"calls": self.calls, "counts": self.counts})
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn faults_count_down() {
        let mut faults = super::Faults::default();
        faults.add("a", Some(2));
        faults.add("b", None);
        faults.add("c", Some(0));
        assert_eq!(faults.hit(|f| *f == "a"), Some("a"));
        assert_eq!(faults.hit(|f| *f == "a"), Some("a"));
        assert_eq!(faults.hit(|f| *f == "a"), None);
        assert_eq!(faults.hit(|f| *f == "c"), None);
        for _ in 0..3 {
            assert_eq!(faults.hit(|f| *f == "b"), Some("b"));
        }
        faults.clear();
        assert_eq!(faults.hit(|_| true), None);
    }

    #[test]
    fn call_logs() {
        let mut log = super::CallLog::default();
        log.record("get".into(), serde_json::json!({"path": "/a"}));
        log.record("get".into(), serde_json::json!({"path": "/b"}));
        assert_eq!(
            log.json().to_string(),
            r#"{"calls":[{"path":"/a"},{"path":"/b"}],"counts":{"get":2}}"#
        );
        log.clear();
        assert_eq!(log.json().to_string(), r#"{"calls":[],"counts":{}}"#);
    }

    #[test]
    fn uuids_are_version_4() {
        let ids = super::Ids::default();
        assert_eq!(ids.next(), 1);
        let u = ids.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, ids.uuid());
    }
}
