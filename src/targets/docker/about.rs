//! What pymdeploy knows of the docker target without its SDK: the keys of
//! `pym-config.yaml` only it reads, and what `new` and `init` write and say
//! for it. `config` includes this file (one line in its `target_kinds!`): it belongs to
//! the config layer, beside the target it describes, and uses nothing else.

use super::Introduction;

target_keys! { docker_keys {
    /// docker target: the address the live and staging ports are published on
    publish_ip: String = "127.0.0.1".to_string() => Docker,
    /// docker target: the host port of the live address (the proxy the tool manages)
    live_port: Port = nonzero!(8080) => Docker,
    /// docker target: the host port of the staging address
    staging_port: Port = nonzero!(8081) => Docker,
    /// docker target: the live proxy's image; unset, it is made on the engine from the running pymdeploy (a Linux host of the engine's CPU architecture); elsewhere, make one with `pymdeploy proxy-image --push REPO` on such a machine
    proxy_image: Option<String> = None => Docker,
    /// seconds open connections get to finish on the old version after a switch
    drain_seconds: u64 = 2 => Docker,
    /// docker target: the host names this environment answers on, through the engine's edge proxy (one for every service of the engine) on `edge_http_port` and `edge_https_port`; unset, live answers on `live_port` through a proxy of its own; see docs/edge.md
    hosts: Vec<String> = Vec::new() => Docker,
    /// docker target: with `hosts`, only the requests whose path is this prefix or below it (`/api`: `/api` and `/api/...`), passed on unchanged
    path_prefix: Option<String> = None => Docker,
    /// docker target: the edge proxy's HTTP port (ACME's HTTP-01 challenges come to it; with `tls`, it redirects to HTTPS)
    edge_http_port: Port = nonzero!(80) => Docker,
    /// docker target: the edge proxy's HTTPS port
    edge_https_port: Port = nonzero!(443) => Docker,
    /// docker target: TLS at the edge for `hosts`: `acme` (a certificate per host from `acme_directory`, renewed by the edge) or `{cert: FILE, key: FILE}` (PEM files); unset, plain HTTP
    tls: Option<Tls> = None => Docker,
    /// docker target: the ACME directory `tls: acme` orders certificates from
    acme_directory: String = crate::config::LETS_ENCRYPT.to_string() => Docker,
    /// docker target: the contact address of the edge's ACME account
    acme_email: Option<String> = None => Docker,
    /// docker target: a PEM file of a CA to trust for `acme_directory` besides the public roots (a private ACME CA's: step-ca, Pebble)
    acme_ca: Option<String> = None => Docker,
    /// docker target: the page (an HTML or text file) every request gets with 503 while `cargo xtask maintenance on` holds
    maintenance_page: Option<String> = None => Docker,
} }

/// The keys this target cannot deploy without, each with an example value: refused before
/// the first step when unset, and required by the JSON Schema when `deploy_target` names it.
pub const REQUIRES: &[(&str, &str)] = &[];

/// What `new` and `init` write and say for this target.
pub const INTRODUCTION: Introduction = Introduction {
    config: "# docker target: live answers on publish_ip:live_port (a proxy pymdeploy keeps there),\n\
             # staging on publish_ip:staging_port. On a server's engine (DOCKER_HOST=ssh://...),\n\
             # publish on an address this machine reaches: 0.0.0.0 or the server's.\n\
             # publish_ip: 127.0.0.1\n\
             # live_port: 8080\n\
             # staging_port: 8081\n",
    readme: include_str!("../../../template/common/README-docker.md"),
    next: " && cargo xtask deploy (the first run may install the pymdeploy binary, once per machine)",
    decide: &[
        "docker_repo: the registry to push to (the docker target can do without one)",
        "publish_ip, live_port, staging_port: where live and staging answer (127.0.0.1:8080 and :8081)",
    ],
};
