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

/// Where an environment's requests come in: the service's own proxy, or with `hosts`
/// the engine's edge, one site of it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Front {
    /// The proxy's container.
    pub container: String,
    /// The route file of the service, inside it.
    pub state: String,
    /// The edge's site (`<name>-<env>`), when it is the edge.
    pub site: Option<String>,
    /// The network the proxy reaches the environment's containers on.
    pub network: String,
}

pub(super) fn front(c: &Config, env: crate::config::PymEnv) -> Front {
    if c.hosts.is_empty() {
        return Front {
            container: proxy_name(c),
            state: crate::ops::proxy::STATE_FILE.to_string(),
            site: None,
            network: network(c),
        };
    }
    let site = crate::ops::edge::site_key(&c.name, env.as_str());
    Front {
        container: edge_name(c),
        state: format!("{}/{site}.upstream", crate::ops::edge::SITES_DIR),
        site: Some(site),
        // Staging's container joins a network of its own, so that taking live off the
        // engine (its network) never waits on staging.
        network: match env {
            crate::config::PymEnv::Staging => format!("{}-staging", network(c)),
            _ => network(c),
        },
    }
}

/// The engine's edge proxy on `edge_http_port`: every service naming that port shares it.
pub(super) fn edge_name(c: &Config) -> String {
    format!("pym-edge-{}", c.edge_http_port)
}

/// The edge's own network (it joins each service's too).
pub(super) fn edge_network(c: &Config) -> String {
    edge_name(c)
}
