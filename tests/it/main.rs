//! pymdeploy's integration tests: one binary, one module per area.
//!
//! - `cli`: `--help` snapshots and clap's own consistency checks
//! - `config`: config errors as the user sees them (file:line, hint, exit code)
//! - `scaffold`: `new` and `init` on real directories and git repositories
//! - `context`: our build context against the docker CLI's, on the same tree
//! - `fake_s3`: the local S3 driven by the official Rust SDK (ranges, ETags, listing,
//!   multipart), as any client drives S3
//! - `pipeline`: test → build → accept-local on generated services, on the real engine
//! - `push`: pushes to a real registry (Debian's docker-registry, htpasswd auth)
//! - `services`: README's commands verbatim, `new --lang python`, `init` in repositories
//!   pymdeploy did not write (tests/fixtures), the service contract, the early checks
//! - `skips`: a test that cannot run here is counted as ignored, with its reason, and
//!   fails in CI (a probe crate on this build.rs); every engine test says so
//! - `remote`: the docker target on an engine reached over ssh (a real sshd on loopback)
//!   and through Docker contexts
//! - `proxy`: the live proxy's HTTP/1.1, byte for byte, against an upstream the test
//!   writes (framing, forwarded headers, pooled connections, what it hands to hyper)
//! - `target_docker`: the whole pipeline on the docker target: stage, promote, rollback
//! - `canary`: canary releases and bakes on the docker target under a loopback load
//! - `target_gke`: the gke target through the `kube` client against the local apiserver of
//!   `tests/fake-kube` (pods are containers), read by the real kubectl
//! - `target_beanstalk`: the aws-beanstalk target through the official AWS SDK, against
//!   the local Elastic Beanstalk and S3 of `tests/fake-aws` (environments are containers)
//! - `aws_cli`: the local AWS as the AWS CLI reads it (buckets, configuration options,
//!   platform versions)
//! - `kube_api`: the local apiserver as kubectl 1.32 expects an apiserver to behave (dry
//!   runs, nodePorts)
//! - `github`: a deploy as a GitHub Actions job runs it: its job summary and outputs,
//!   secrets masked first, errors and failing tests as annotations
//! - `xtask`: a service's xtask: the binary it finds or installs once, a team's own
//!   steps, the older form that links the library
//!
//! A test that needs the Docker engine says `#[cfg_attr(pym_no_engine, ignore = ...)]`
//! and calls `support::need_engine()`: where build.rs found no engine it is reported as
//! ignored, with the reason, and counted so; with `CI` set, build.rs never sets that cfg,
//! so a missing engine fails those tests: CI never skips.

mod aws_cli;
mod canary;
mod cli;
mod config;
mod context;
mod edge;
mod fake_kube;
#[cfg(feature = "aws-beanstalk")]
mod fake_s3;
mod github;
mod kube_api;
mod pebble;
mod pipeline;
mod proxy;
mod push;
mod remote;
mod scaffold;
mod services;
mod skips;
mod support;
mod target_beanstalk;
mod target_cloudrun;
mod target_docker;
mod target_gke;
mod xtask;
