//! The names of what the docker target makes on the engine, one function each, so the
//! decisions, the actions and `status` agree on them.

use crate::config::Config;

pub(super) fn network(c: &Config) -> String {
    format!("pym-{}", c.name)
}

pub(super) fn proxy_name(c: &Config) -> String {
    format!("pym-{}-proxy", c.name)
}

pub(super) fn staging_name(c: &Config) -> String {
    format!("pym-{}-staging", c.name)
}

pub(super) fn live_name(c: &Config, version: &str) -> String {
    format!("pym-{}-live-{version}", c.name)
}

pub(super) fn lock_name(c: &Config) -> String {
    format!("pym-{}-lock", c.name)
}

/// The deploy record's container of sequence number `seq` (see `record`).
pub(super) fn record_name(c: &Config, seq: u64) -> String {
    format!("pym-{}-record-{seq}", c.name)
}

/// The container name of an upstream (`<name>:<port>`).
pub(super) fn upstream_container(upstream: &str) -> &str {
    upstream.rsplit_once(':').map_or(upstream, |(n, _)| n)
}
