//! `cargo xtask bench`: pymdeploy against the plain tools, in the same session.
//!
//! 1. cold compile of a generated service's xtask (fresh target directory) on each
//!    target, with the core count; then, on a machine without the pymdeploy binary,
//!    the first `cargo xtask --help` (it installs the binary, once) and a second
//!    service's (it finds it); and the cold install of the binary for each cloud target;
//! 2. `build` + `accept-local` wall time, against the same work done with cargo, the
//!    docker CLI and a 100 ms curl loop, as a ratio (median of alternating runs);
//! 3. readiness latency: from a server starting to answer `/ping` to our poll seeing it;
//! 4. peak memory of `pymdeploy build` with a 1 GiB file in the context, ignored and
//!    included, against the docker CLI's on the same context;
//! 5. a full `deploy` (all eight steps, a new commit each round) against the same steps
//!    done with cargo, the docker CLI, curl and a blue/green switch through nginx (new
//!    container, health, upstream reloaded, /version checked, old one stopped); and a re-push of an unchanged image
//!    against `docker push`;
//! 6. promote and rollback under wrk (keep-alive and `Connection: close`): errors and p99
//!    against steady state, rollback wall time, promote against one container started by
//!    hand;
//! 7. the live proxy's added latency per request (its p50 over the container's own, under
//!    wrk) with canary routing on (a share, a bucket per client, its cookie) against off.
//!
//! Figures go to stdout as a table; progress to stderr.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pymdeploy::output::{Printer, StepReport};

#[derive(clap::Args)]
pub struct Args {
    /// Rounds of each timed comparison (alternating ours and the plain tools)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Skip the cold compile measurement (the slowest part)
    #[arg(long)]
    skip_compile: bool,
    /// Run only these stages (repeatable): cold-compile, second-service, install, build+accept,
    /// deploy, switch, canary, edge, readiness, memory
    #[arg(long, value_name = "STAGE")]
    only: Vec<String>,
}

/// `crate::stage`, unless `--only` names other stages.
fn stage_if(
    only: &[String],
    printer: &Printer,
    reports: &mut Vec<StepReport>,
    name: &str,
    f: impl FnOnce(&pymdeploy::output::StepProgress<'_>) -> Result<String>,
) -> Result<String> {
    if !only.is_empty() && !only.iter().any(|o| o == name) {
        return Ok(String::new());
    }
    crate::stage(printer, reports, name, f)
}

struct Figure {
    what: String,
    value: String,
    goal: String,
    met: Option<bool>,
}

pub fn run(printer: &Printer, reports: &mut Vec<StepReport>, args: Args) -> Result<()> {
    let result = measure(printer, reports, args);
    // The images the benchmark made go, whatever happened: it leaves the engine as it
    // found it.
    cleanup_images();
    result
}

fn cleanup_images() {
    let Ok(out) = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
    else {
        return;
    };
    for image in String::from_utf8_lossy(&out.stdout).lines() {
        let repo = image.rsplit_once(':').map(|(r, _)| r).unwrap_or(image);
        let last = repo.rsplit('/').next().unwrap_or(repo);
        if last.starts_with("bench-") || last.starts_with("pym-bench") || repo == "pym-proxy" {
            // Without -f: an image a container still uses (another service's proxy) stays.
            let _ = Command::new("docker").args(["rmi", image]).output();
        }
    }
}

fn measure(printer: &Printer, reports: &mut Vec<StepReport>, args: Args) -> Result<()> {
    crate::setup(printer, reports)?;
    let work = std::env::temp_dir().join(format!("pym-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let pymdeploy = build_pymdeploy(printer, reports)?;
    let mut figures = Vec::new();

    if !args.skip_compile {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        stage_if(&args.only, printer, reports, "cold-compile", |p| {
            // A generated xtask compiles `pymdeploy-xtask` alone (no dependencies) on every
            // target: the target's SDK is in the binary it runs, installed once per
            // machine (the next stage measures that for the docker target).
            let mut secs = Vec::new();
            for (target, goal) in [
                ("docker", 45.0),
                ("aws-beanstalk", 120.0),
                ("gcp-cloud-run", 120.0),
                ("gke", 120.0),
            ] {
                let svc = new_service_for(
                    &pymdeploy,
                    &work,
                    &format!("bench-compile-{target}"),
                    target,
                )?;
                let dir = work.join("cold-target");
                p.message(&format!("cargo build of the generated xtask ({target} target) in an empty target directory"));
                let t = Instant::now();
                let st = Command::new(env!("CARGO"))
                    .args(["build", "--quiet", "--manifest-path", "xtask/Cargo.toml"])
                    .env("CARGO_TARGET_DIR", &dir)
                    .current_dir(&svc)
                    .status()?;
                ensure!(st.success(), "the xtask ({target} target) did not compile");
                let s = t.elapsed().as_secs_f64();
                let _ = std::fs::remove_dir_all(&dir);
                figures.push(Figure {
                    what: format!(
                        "cold compile of a generated xtask ({target} target; {cores} cores)"
                    ),
                    value: format!("{s:.1} s"),
                    goal: format!("< {goal:.0} s"),
                    met: Some(s < goal),
                });
                secs.push(s);
            }
            Ok(secs
                .iter()
                .map(|s| format!("{s:.1}s"))
                .collect::<Vec<_>>()
                .join(", "))
        })?;
        stage_if(&args.only, printer, reports, "second-service", |p| {
            // As a user runs it: `cargo xtask --help` through the generated alias, in two
            // services one after the other, on a machine without the pymdeploy binary: a
            // cargo home of its own (sharing the downloaded registry and the settings), no
            // `pymdeploy` on PATH, no CARGO_TARGET_DIR. The first installs the binary (a
            // cold `cargo install`), the second finds it.
            let home = work.join("cargo-home");
            std::fs::create_dir_all(&home)?;
            let real = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
                });
            for shared in ["registry", "git", "config.toml"] {
                if real.join(shared).exists() {
                    std::os::unix::fs::symlink(real.join(shared), home.join(shared))?;
                }
            }
            let cargo_dir = PathBuf::from(env!("CARGO"));
            let path = format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                cargo_dir.parent().unwrap_or(Path::new("/")).display()
            );
            let mut secs = Vec::new();
            for name in ["bench-first-service", "bench-second-service"] {
                let svc = new_service(&pymdeploy, &work, name)?;
                p.message(&format!("cargo xtask --help in {name}"));
                let t = Instant::now();
                let out = Command::new(env!("CARGO"))
                    .args(["xtask", "--help"])
                    .env("CARGO_HOME", &home)
                    .env("PATH", &path)
                    .env_remove("CARGO_TARGET_DIR")
                    .env_remove("PYMDEPLOY_BIN")
                    .current_dir(&svc)
                    .output()?;
                ensure!(
                    out.status.success(),
                    "cargo xtask --help failed in {name}:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                secs.push(t.elapsed().as_secs_f64());
            }
            let (first, second) = (secs[0], secs[1]);
            figures.push(Figure {
                what: format!("first `cargo xtask --help` on a machine without the binary: installs pymdeploy (docker target; {cores} cores), once per machine and version"),
                value: format!("{first:.1} s"),
                goal: "(once)".into(),
                met: None,
            });
            figures.push(Figure {
                what: format!("first `cargo xtask --help` of a second service ({cores} cores)"),
                value: format!("{second:.1} s"),
                goal: "< 10 s".into(),
                met: Some(second < 10.0),
            });
            Ok(format!("{first:.1}s, then {second:.1}s"))
        })?;
        stage_if(&args.only, printer, reports, "install", |p| {
            // What a machine pays once per version for each cloud target: the binary
            // `pymdeploy-xtask` installs, with the target's SDK, into an empty build
            // directory (as the first service's `cargo xtask` does above for docker).
            let mut secs = Vec::new();
            for target in ["aws-beanstalk", "gcp-cloud-run", "gke"] {
                let dir = work.join("install-build");
                let root = work.join("install-root");
                p.message(&format!(
                    "cargo install --debug --features {target} into an empty build directory"
                ));
                let t = Instant::now();
                let st = Command::new(env!("CARGO"))
                    .args([
                        "install",
                        "--quiet",
                        "--locked",
                        "--debug",
                        "--features",
                        target,
                    ])
                    .arg("--root")
                    .arg(&root)
                    .arg("--path")
                    .arg(crate::root())
                    .env("CARGO_TARGET_DIR", &dir)
                    .status()?;
                ensure!(st.success(), "pymdeploy with {target} did not install");
                let s = t.elapsed().as_secs_f64();
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir_all(&root);
                figures.push(Figure {
                    what: format!("cold install of the binary for services on {target} ({cores} cores), once per machine and version"),
                    value: format!("{s:.1} s"),
                    goal: "(once)".into(),
                    met: None,
                });
                secs.push(format!("{s:.0}s"));
            }
            Ok(secs.join(", "))
        })?;
    }

    stage_if(&args.only, printer, reports, "build+accept", |p| {
        let target = work.join("svc-target");
        let svc = new_service(&pymdeploy, &work, "bench-pipeline")?;
        // Warm both paths once: cargo's cache, the engine's layer cache.
        p.message("warming up");
        pym(&pymdeploy, &svc, &target, &["build"])?;
        pym(&pymdeploy, &svc, &target, &["accept-local"])?;
        let (mut ours, mut plain) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            p.message(&format!("round {} of {}", round + 1, args.rounds));
            let t = Instant::now();
            pym(&pymdeploy, &svc, &target, &["build", "--force-build"])?;
            pym(&pymdeploy, &svc, &target, &["accept-local"])?;
            ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            plain_build_accept(&svc, &target)?;
            plain.push(t.elapsed().as_secs_f64());
        }
        let (o, c) = (median(&mut ours), median(&mut plain));
        let ratio = o / c;
        figures.push(Figure {
            what: format!("build + accept-local: pymdeploy {o:.2} s vs docker CLI + curl {c:.2} s (median of {})", args.rounds),
            value: format!("{ratio:.2}x"),
            goal: "<= 1.0x".into(),
            met: Some(ratio <= 1.0),
        });
        Ok(format!("ratio {ratio:.2}"))
    })?;

    let deployed = stage_if(&args.only, printer, reports, "deploy", |p| {
        let registry = start_registry(&work)?;
        let target = work.join("svc-target");
        let svc = new_service(&pymdeploy, &work, "bench-deploy")?;
        let (live, staging) = (free_port()?, free_port()?);
        let config = std::fs::read_to_string(svc.join("pym-config.yaml"))?.replace(
            "# docker_repo: registry.example.com/team",
            &format!("docker_repo: {}/bench\nlive_port: {live}\nstaging_port: {staging}\ndrain_seconds: 1", registry.1),
        );
        std::fs::write(svc.join("pym-config.yaml"), config)?;
        commit(&svc, "bench registry")?;
        p.message("warming up");
        pym(&pymdeploy, &svc, &target, &["deploy"])?;
        // The plain script's proxy, started once as pymdeploy's was by the first deploy.
        let nginx = Nginx::start(&work, live + 1000)?;
        let (mut ours, mut plain) = (Vec::new(), Vec::new());
        let mut last_ours = String::new();
        for round in 0..args.rounds {
            p.message(&format!("round {} of {}", round + 1, args.rounds));
            std::fs::write(svc.join("src/round.txt"), format!("{round}"))?;
            commit(&svc, &format!("ours {round}"))?;
            let t = Instant::now();
            pym(&pymdeploy, &svc, &target, &["deploy"])?;
            ours.push(t.elapsed().as_secs_f64());
            last_ours = version_of(&pymdeploy, &svc)?;
            std::fs::write(svc.join("src/round.txt"), format!("plain {round}"))?;
            commit(&svc, &format!("plain {round}"))?;
            let t = Instant::now();
            plain_deploy(
                &svc,
                &target,
                &registry.1,
                &nginx,
                live + 1000,
                staging + 1000,
            )?;
            plain.push(t.elapsed().as_secs_f64());
        }
        let (o, c) = (median(&mut ours), median(&mut plain));
        let deploy_ratio = o / c;
        figures.push(Figure {
            what: format!("full deploy, 8 steps: pymdeploy {o:.2} s vs cargo + docker CLI + curl + nginx blue/green {c:.2} s (median of {})", args.rounds),
            value: format!("{:.2}x", o / c),
            goal: "<= 0.8x".into(),
            met: Some(o / c <= 0.8),
        });
        // Re-push of an unchanged image.
        let mut ours = Vec::new();
        let mut plain = Vec::new();
        // The last version pymdeploy built, checked out again to push it unchanged.
        let tag = format!("{}/bench/bench-deploy:{last_ours}", registry.1);
        let sha = last_ours.rsplit('-').next().unwrap_or_default().to_string();
        ensure!(
            Command::new("git")
                .args(["checkout", "-q", &sha])
                .current_dir(&svc)
                .status()?
                .success(),
            "git checkout {sha}"
        );
        for _ in 0..args.rounds {
            let t = Instant::now();
            pym(&pymdeploy, &svc, &target, &["push"])?;
            ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            ensure!(
                Command::new("docker")
                    .args(["push", "-q", &tag])
                    .output()?
                    .status
                    .success(),
                "docker push failed"
            );
            plain.push(t.elapsed().as_secs_f64());
        }
        let (o, c) = (median(&mut ours), median(&mut plain));
        figures.push(Figure {
            what: format!(
                "re-push of an unchanged image: pymdeploy {o:.2} s vs docker push {c:.2} s"
            ),
            value: format!("{:.2}x", o / c),
            goal: "report".into(),
            met: None,
        });
        drop(registry);
        // Each ratio said with what it measures.
        Ok(format!(
            "full deploy {deploy_ratio:.2}x, unchanged re-push {:.2}x",
            o / c
        ))
    });
    // What the deploys left on the engine goes, whether they succeeded or not.
    remove_bench_service("bench-deploy")?;
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "name=^bench-plain-"])
        .output()?;
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
    deployed?;

    let switched = stage_if(&args.only, printer, reports, "switch", |p| {
        switch_under_load(&pymdeploy, &work, args.rounds, &mut figures, p)
    });
    remove_bench_service("bench-switch")?;
    switched?;

    let canary = stage_if(&args.only, printer, reports, "canary", |p| {
        canary_overhead(&pymdeploy, &work, args.rounds, &mut figures, p)
    });
    remove_bench_service("bench-canary")?;
    canary?;

    let edge = stage_if(&args.only, printer, reports, "edge", |p| {
        edge_against_nginx(&pymdeploy, &work, args.rounds, &mut figures, p)
    });
    remove_bench_service("bench-edge")?;
    edge?;

    stage_if(&args.only, printer, reports, "readiness", |_| {
        let mut lat = readiness_latencies(20)?;
        let med = median(&mut lat);
        let max = lat.iter().cloned().fold(0.0, f64::max);
        figures.push(Figure {
            what: "readiness seen after the server starts answering (median / max of 20)".into(),
            value: format!("{:.1} / {:.1} ms", med * 1e3, max * 1e3),
            goal: "<= 100 ms".into(),
            met: Some(max <= 0.100),
        });
        Ok(format!("median {:.1} ms", med * 1e3))
    })?;

    stage_if(&args.only, printer, reports, "memory", |p| {
        for include in [false, true] {
            let dir = context_service(&work, include)?;
            p.message(&format!(
                "1 GiB file {}",
                if include { "included" } else { "ignored" }
            ));
            let (ours, _) = peak_rss(
                Command::new(&pymdeploy)
                    .args(["build", "--force-build"])
                    .current_dir(&dir)
                    .env("NO_COLOR", "1"),
            )?;
            let (cli, _) = peak_rss(
                Command::new("docker")
                    .args(["build", "-q", "-t", "pym-bench-ctx:cli", "."])
                    .env("DOCKER_BUILDKIT", "0")
                    .current_dir(&dir),
            )?;
            let mib = ours as f64 / 1024.0;
            figures.push(Figure {
                what: format!(
                    "peak RSS of `pymdeploy build`, 1 GiB file {} (docker CLI: {:.1} MiB)",
                    if include { "included" } else { "ignored" },
                    cli as f64 / 1024.0
                ),
                value: format!("{mib:.1} MiB"),
                goal: "< 64 MiB".into(),
                met: Some(mib < 64.0),
            });
            let _ = Command::new("docker")
                .args(["rmi", "-f", "pym-bench-ctx:cli"])
                .output();
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .arg(format!("pym-bench-ctx:{}", version_of(&pymdeploy, &dir)?))
                .output();
        }
        Ok("measured".into())
    })?;

    let _ = std::fs::remove_dir_all(&work);
    printer.data("");
    printer.data(&format!(
        "{:<100} {:>16} {:>10} {}",
        "figure", "value", "goal", "met"
    ));
    for f in &figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        printer.data(&format!(
            "{:<100} {:>16} {:>10} {met}",
            f.what, f.value, f.goal
        ));
    }
    Ok(())
}

/// A new service `name` on free live and staging ports (and `extra` config lines),
/// deployed once: (its directory, live port, staging port).
fn deployed_service(
    pymdeploy: &Path,
    work: &Path,
    name: &str,
    extra: &str,
) -> Result<(PathBuf, u16, u16)> {
    let svc = new_service(pymdeploy, work, name)?;
    let (live, staging) = (free_port()?, free_port()?);
    let config = std::fs::read_to_string(svc.join("pym-config.yaml"))?;
    std::fs::write(
        svc.join("pym-config.yaml"),
        format!("{config}live_port: {live}\nstaging_port: {staging}\n{extra}"),
    )?;
    commit(&svc, "bench ports")?;
    pym(
        pymdeploy,
        &svc,
        &work.join("svc-target"),
        &["deploy", "--no-test"],
    )?;
    Ok((svc, live, staging))
}

/// `deployed_service` with no extra config, and its live container: (its directory, live
/// port, staging port, the live container's name, its address on the service's network).
fn deployed_live(
    pymdeploy: &Path,
    work: &Path,
    name: &str,
) -> Result<(PathBuf, u16, u16, String, String)> {
    let (svc, live, staging) = deployed_service(pymdeploy, work, name, "")?;
    let version = version_of(pymdeploy, &svc)?;
    let container = format!("pym-{name}-live-{version}");
    let ip = String::from_utf8_lossy(
        &Command::new("docker")
            .args([
                "inspect",
                "-f",
                &format!("{{{{(index .NetworkSettings.Networks \"pym-{name}\").IPAddress}}}}"),
                &container,
            ])
            .output()?
            .stdout,
    )
    .trim()
    .to_string();
    ensure!(!ip.is_empty(), "no address of {container}");
    Ok((svc, live, staging, container, ip))
}

/// Removes what a bench service left on the engine (its containers and network), whether
/// its stage succeeded or not.
fn remove_bench_service(name: &str) -> Result<()> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=org.pymacaron.name={name}"),
        ])
        .output()?;
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("pym-{name}")])
        .output();
    Ok(())
}

fn build_pymdeploy(printer: &Printer, reports: &mut Vec<StepReport>) -> Result<PathBuf> {
    crate::stage(printer, reports, "compile", |_| {
        let st = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--release", "--bin", "pymdeploy"])
            .current_dir(crate::root())
            .status()?;
        ensure!(st.success(), "pymdeploy did not compile");
        Ok("pymdeploy (release)".into())
    })?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    Ok(target.join("release/pymdeploy"))
}

fn new_service(pymdeploy: &Path, work: &Path, name: &str) -> Result<PathBuf> {
    new_service_for(pymdeploy, work, name, "docker")
}

fn new_service_for(pymdeploy: &Path, work: &Path, name: &str, target: &str) -> Result<PathBuf> {
    let dir = work.join(name);
    let out = Command::new(pymdeploy)
        .args(["new", name, "--target", target, "--path"])
        .arg(&dir)
        .arg("--pymdeploy-path")
        .arg(crate::root())
        .output()?;
    ensure!(
        out.status.success(),
        "pymdeploy new failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir)
}

fn pym(pymdeploy: &Path, svc: &Path, target: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(pymdeploy)
        .args(args)
        .current_dir(svc)
        .env("CARGO_TARGET_DIR", target)
        .env("NO_COLOR", "1")
        .output()?;
    ensure!(
        out.status.success(),
        "pymdeploy {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn version_of(pymdeploy: &Path, dir: &Path) -> Result<String> {
    let out = Command::new(pymdeploy)
        .arg("version")
        .current_dir(dir)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The same work as `build` + `accept-local`, by hand: cargo, the docker CLI, curl.
fn plain_build_accept(svc: &Path, target: &Path) -> Result<()> {
    let name = svc.file_name().unwrap().to_str().unwrap();
    let sh = |program: &str, args: &[&str]| -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .current_dir(svc)
            .env("CARGO_TARGET_DIR", target)
            .env("DOCKER_BUILDKIT", "0")
            .output()?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    sh("cargo", &["build", "--release", "--bin", name])?;
    std::fs::create_dir_all(svc.join(".pym/dist"))?;
    std::fs::copy(
        target.join("release").join(name),
        svc.join(".pym/dist").join(name),
    )?;
    let tag = format!("{name}:plain");
    // The version baked in and the commit labelled, as pymdeploy does and as any script
    // that tags images by version must: a new commit misses the cache of those steps.
    let sha = sh("git", &["rev-parse", "HEAD"])?;
    let version = format!("PYM_VERSION=plain-{}", &sha[..12.min(sha.len())]);
    let label = format!("org.pymacaron.commit={name}/{sha}");
    sh(
        "docker",
        &[
            "build",
            "-q",
            "-t",
            &tag,
            "--build-arg",
            &version,
            "--build-arg",
            "PYM_BASE=debian:bookworm-slim",
            "--label",
            &label,
            ".",
        ],
    )?;
    let id = sh(
        "docker",
        &[
            "run",
            "-d",
            "--init",
            "-e",
            "PYM_ENV=local",
            "-e",
            "PORT=8080",
            "-p",
            "127.0.0.1::8080",
            &tag,
        ],
    )?;
    let result = (|| -> Result<()> {
        let port = sh("docker", &["port", &id, "8080/tcp"])?;
        let port = port
            .lines()
            .next()
            .unwrap_or("")
            .rsplit(':')
            .next()
            .unwrap_or("")
            .to_string();
        let url = format!("http://127.0.0.1:{port}/ping");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &url])
                .status()?
                .success();
            if ok {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the plain run never became healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = Command::new("cargo")
            .args(["test", "--manifest-path", "testaccept/Cargo.toml"])
            .current_dir(svc)
            .env("CARGO_TARGET_DIR", target)
            .env("PYM_SERVER_HOST", "127.0.0.1")
            .env("PYM_SERVER_PORT", &port)
            .env("PYM_ENV", "local")
            .output()?;
        ensure!(out.status.success(), "plain acceptance failed");
        Ok(())
    })();
    sh("docker", &["rm", "-f", &id])?;
    result
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn commit(dir: &Path, message: &str) -> Result<()> {
    for args in [
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-q",
            "-m",
            message,
        ],
    ] {
        ensure!(
            Command::new("git")
                .args(&args)
                .current_dir(dir)
                .status()?
                .success(),
            "git {args:?}"
        );
    }
    Ok(())
}

/// A registry without auth for the benchmark, stopped on drop.
struct BenchRegistry(std::process::Child, String);

impl Drop for BenchRegistry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(work: &Path) -> Result<BenchRegistry> {
    let port = free_port()?;
    let dir = work.join("registry");
    std::fs::create_dir_all(&dir)?;
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Ok(BenchRegistry(child, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the benchmark's registry did not start")
}

/// What wrk saw: requests, socket errors, non-2xx answers, p50 and p99 latency in ms.
struct Load {
    requests: u64,
    errors: u64,
    non_2xx: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// wrk's `1.23ms`, `850.00us`, `1.02s` in milliseconds.
fn wrk_ms(v: &str) -> f64 {
    let v = v.trim();
    match (v.strip_suffix("ms"), v.strip_suffix("us")) {
        (Some(ms), _) => ms.parse().unwrap_or(0.0),
        (_, Some(us)) => us.parse::<f64>().unwrap_or(0.0) / 1000.0,
        _ => {
            v.strip_suffix('s')
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0)
                * 1000.0
        }
    }
}

/// `wrk --latency` with `connections` keep-alive connections (one thread for one).
fn wrk_with(url: &str, secs: u64, connections: u32) -> Result<std::process::Child> {
    let threads = if connections == 1 { "-t1" } else { "-t2" };
    Command::new("wrk")
        .args([
            threads,
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot run wrk (install it: `apt-get install wrk`)")
}

/// `wrk -t2 -c20 -d<secs>s --latency` against `url`, keep-alive or `Connection: close`.
fn wrk(url: &str, secs: u64, close: bool) -> Result<std::process::Child> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c20", &format!("-d{secs}s"), "--latency"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    cmd.spawn()
        .context("cannot run wrk (install it: `apt-get install wrk`)")
}

fn wrk_result(child: std::process::Child) -> Result<Load> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |s: &str| s.trim().trim_end_matches(',').parse::<u64>().unwrap_or(0);
    let mut load = Load {
        requests: 0,
        errors: 0,
        non_2xx: 0,
        p50_ms: 0.0,
        p99_ms: 0.0,
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            load.errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last())
                .map(number)
                .sum();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.non_2xx = number(rest);
        } else if let Some(rest) = line.strip_prefix("99%") {
            load.p99_ms = wrk_ms(rest);
        } else if let Some(rest) = line.strip_prefix("50%") {
            load.p50_ms = wrk_ms(rest);
        } else if line.contains("requests in") {
            load.requests = number(line.split_whitespace().next().unwrap_or("0"));
        }
    }
    ensure!(load.requests > 0, "wrk reported no requests:\n{text}");
    Ok(load)
}

/// Promote and rollback under wrk, keep-alive and `Connection: close`: errors (bar 0) and
/// p99 during the switch against steady state; promote and rollback wall times, promote
/// against starting one container by hand (create, start, health).
fn switch_under_load(
    pymdeploy: &Path,
    work: &Path,
    rounds: usize,
    figures: &mut Vec<Figure>,
    p: &pymdeploy::output::StepProgress<'_>,
) -> Result<String> {
    let target = work.join("svc-target");
    let (svc, live, _) = deployed_service(pymdeploy, work, "bench-switch", "drain_seconds: 10\n")?;
    let url = format!("http://127.0.0.1:{live}/version");
    let mut promote_secs = Vec::new();
    let mut promote_whole = Vec::new();
    let mut rollback_secs = Vec::new();
    for (round, close) in [false, true].into_iter().enumerate() {
        let mode = if close {
            "Connection: close"
        } else {
            "keep-alive"
        };
        p.message(&format!("steady state, {mode}"));
        let steady = wrk_result(wrk(&url, 4, close)?)?;
        std::fs::write(svc.join("src/round.txt"), format!("{round}"))?;
        commit(&svc, &format!("switch {round}"))?;
        pym(
            pymdeploy,
            &svc,
            &target,
            &["deploy", "--no-test", "--to", "accept-staging"],
        )?;
        for what in ["promote", "rollback"] {
            p.message(&format!("{what} under wrk, {mode}"));
            let load = wrk(&url, 8, close)?;
            std::thread::sleep(Duration::from_secs(2));
            pym(pymdeploy, &svc, &target, &[what])?;
            let l = wrk_result(load)?;
            figures.push(Figure {
                what: format!("wrk -c20 across {what}, {mode}: {} requests, p99 {:.1} ms (steady state {:.1} ms)", l.requests, l.p99_ms, steady.p99_ms),
                value: format!("{} errors, {} non-2xx", l.errors, l.non_2xx),
                goal: "0 and 0".into(),
                met: Some(l.errors == 0 && l.non_2xx == 0),
            });
        }
        // Back to the new version for the next round.
        pym(pymdeploy, &svc, &target, &["promote"])?;
    }
    // Timings, without load (wrk shares the two cores with the engine): promote, then
    // rollback, of a new version each round; against one container by hand: create,
    // start, wait for /ping (the part of promote that cannot be avoided).
    let mut plain = Vec::new();
    for round in 0..rounds {
        p.message(&format!(
            "timing promote, rollback and docker run, round {} of {rounds}",
            round + 1
        ));
        std::fs::write(svc.join("src/round.txt"), format!("timing {round}"))?;
        commit(&svc, &format!("timing {round}"))?;
        pym(
            pymdeploy,
            &svc,
            &target,
            &["deploy", "--no-test", "--to", "accept-staging"],
        )?;
        let (serving, whole) = timed_switch(pymdeploy, &svc, &target, "promote")?;
        promote_secs.push(serving);
        promote_whole.push(whole);
        rollback_secs.push(timed_switch(pymdeploy, &svc, &target, "rollback")?.0);
        let image = format!("bench-switch:{}", version_of(pymdeploy, &svc)?);
        let t = Instant::now();
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                "bench-switch-plain",
                "-p",
                "127.0.0.1::8080",
                "-e",
                "PORT=8080",
                &image,
            ])
            .output()?;
        ensure!(
            out.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = String::from_utf8_lossy(
            &Command::new("docker")
                .args(["port", "bench-switch-plain", "8080"])
                .output()?
                .stdout,
        )
        .trim()
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
        curl_until_ok(&format!("http://127.0.0.1:{port}/ping"))?;
        plain.push(t.elapsed().as_secs_f64());
        let _ = Command::new("docker")
            .args(["rm", "-f", "bench-switch-plain"])
            .output();
        pym(pymdeploy, &svc, &target, &["promote"])?;
    }
    let (pr, rb, pl, whole) = (
        median(&mut promote_secs),
        median(&mut rollback_secs),
        median(&mut plain),
        median(&mut promote_whole),
    );
    figures.push(Figure {
        what: format!("promote until live serves the new version, verified (command start to its step done) {pr:.2} s vs docker run + health of one container {pl:.2} s (median of {rounds})"),
        value: format!("{:.2}x", pr / pl),
        goal: "<= 1.2x".into(),
        met: Some(pr / pl <= 1.2),
    });
    figures.push(Figure {
        what: format!("promote command to its exit, the old version drained and stopped beside it ({whole:.2} s)"),
        value: format!("{:.2}x", whole / pl),
        goal: "report".into(),
        met: None,
    });
    figures.push(Figure {
        what: format!(
            "rollback until live serves the version before, verified (median of {rounds})"
        ),
        value: format!("{rb:.2} s"),
        goal: "< 2 s".into(),
        met: Some(rb < 2.0),
    });
    Ok(format!("promote {pr:.2}s, rollback {rb:.2}s"))
}

/// The live proxy's added latency per request with canary routing on against off: the
/// p50 under `wrk -c20` (keep-alive) through the proxy, less the p50 straight to the same
/// image's container (staging), alternating off and on. On, the proxy gives 50% to a
/// canary (the live container itself, so only the routing differs): it reads each
/// request's cookie, draws a bucket for a client without one and sets its cookie.
fn canary_overhead(
    pymdeploy: &Path,
    work: &Path,
    rounds: usize,
    figures: &mut Vec<Figure>,
    p: &pymdeploy::output::StepProgress<'_>,
) -> Result<String> {
    let (_, live, staging, container, ip) = deployed_live(pymdeploy, work, "bench-canary")?;
    let share = |bp: u32| -> Result<()> {
        let st = Command::new("docker")
            .args([
                "exec",
                "pym-bench-canary-proxy",
                "/usr/local/bin/pym-proxy",
                "__proxy-canary",
                &format!("{container}:8080"),
                "--addr",
                &format!("{ip}:8080"),
                "--share",
                &bp.to_string(),
                "--state",
                "/state/upstream",
            ])
            .status()?;
        ensure!(st.success(), "the proxy did not take the canary share");
        Ok(())
    };
    let (mut direct, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        p.message(&format!(
            "wrk straight, canary off, canary on: round {} of {rounds}",
            round + 1
        ));
        direct.push(
            wrk_result(wrk(
                &format!("http://127.0.0.1:{staging}/version"),
                4,
                false,
            )?)?
            .p50_ms,
        );
        share(0)?;
        off.push(wrk_result(wrk(&format!("http://127.0.0.1:{live}/version"), 4, false)?)?.p50_ms);
        share(5000)?;
        let l = wrk_result(wrk(&format!("http://127.0.0.1:{live}/version"), 4, false)?)?;
        ensure!(
            l.errors == 0 && l.non_2xx == 0,
            "requests failed with canary routing on"
        );
        on.push(l.p50_ms);
    }
    share(0)?;
    let (d, off, on) = (median(&mut direct), median(&mut off), median(&mut on));
    let (added_off, added_on) = ((off - d).max(0.001), (on - d).max(0.001));
    figures.push(Figure {
        what: format!(
            "live proxy's added p50 per request, wrk -c20 keep-alive: canary routing on {:.3} ms vs off {:.3} ms (p50 {on:.3} / {off:.3} ms, straight to the container {d:.3} ms; median of {rounds})",
            added_on, added_off
        ),
        value: format!("{:.2}x", added_on / added_off),
        goal: "<= 1.2x".into(),
        met: Some(added_on / added_off <= 1.2),
    });
    Ok(format!(
        "added p50: on {added_on:.3} ms, off {added_off:.3} ms"
    ))
}

/// The edge against nginx as a reverse proxy, side by side on this machine, in front of the
/// same upstream (a deployed live container, by its address on the engine's bridge): the
/// added p50 (under `wrk -c20` keep-alive, less the p50 straight to the container) and the
/// requests per second, in plain HTTP and in TLS (HTTP/1.1, one self-signed certificate
/// for `bench.localhost`; plain HTTP to `plain.localhost`, a site without TLS). Both run as
/// processes of this machine on `::1` (where `*.localhost` resolves, so wrk sends the name
/// as SNI): the edge is the very binary that
/// runs in its container (`__proxy --sites`), so the figures are the proxies' own, with
/// no published port's forwarding in front of either. Both use every core.
fn edge_against_nginx(
    pymdeploy: &Path,
    work: &Path,
    rounds: usize,
    figures: &mut Vec<Figure>,
    p: &pymdeploy::output::StepProgress<'_>,
) -> Result<String> {
    let (_, _, _, container, ip) = deployed_live(pymdeploy, work, "bench-edge")?;
    let dir = work.join("edge-bench");
    std::fs::create_dir_all(dir.join("state/sites"))?;
    std::fs::create_dir_all(dir.join("nginx/logs"))?;
    // One certificate for both.
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench.localhost",
            "-addext",
            "subjectAltName=DNS:bench.localhost",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()?;
    ensure!(st.success(), "openssl did not make the bench's certificate");
    let (cert, key) = (
        std::fs::read_to_string(dir.join("cert.pem"))?,
        std::fs::read_to_string(dir.join("key.pem"))?,
    );
    let site = serde_json::json!({
        "hosts": ["bench.localhost"],
        "tls": {"mode": "files", "cert_pem": cert, "key_pem": key},
        "service": "bench-edge",
        "env": "live",
    });
    // The same upstream as a site without TLS (a site with TLS redirects plain HTTP).
    let plain_site = serde_json::json!({
        "hosts": ["plain.localhost"],
        "service": "bench-edge",
        "env": "plain",
    });
    for (key, conf) in [("bench", &site), ("plain", &plain_site)] {
        std::fs::write(
            dir.join(format!("state/sites/{key}.json")),
            conf.to_string(),
        )?;
        std::fs::write(
            dir.join(format!("state/sites/{key}.upstream")),
            format!("{container}:8080 {ip}:8080\n"),
        )?;
    }
    let (edge_http, edge_tls, edge_admin, nginx_http, nginx_tls) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let mut edge = Command::new(pymdeploy)
        .args([
            "__proxy",
            "--listen",
            &format!("[::1]:{edge_http}"),
            "--listen-tls",
            &format!("[::1]:{edge_tls}"),
            "--admin",
            &format!("127.0.0.1:{edge_admin}"),
            "--sites",
        ])
        .arg(dir.join("state/sites"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let conf = format!(
        "daemon on;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nworker_processes auto;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log {d}/logs/access.log;\n  upstream app {{ server {ip}:8080; keepalive 32; }}\n  server {{\n    listen [::1]:{nginx_http};\n    listen [::1]:{nginx_tls} ssl;\n    server_name bench.localhost plain.localhost;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n  }}\n}}\n",
        d = dir.join("nginx").display(),
        cert = dir.join("cert.pem").display(),
        key = dir.join("key.pem").display(),
    );
    std::fs::write(dir.join("nginx/nginx.conf"), conf)?;
    let st = Command::new("nginx")
        .arg("-p")
        .arg(dir.join("nginx"))
        .args(["-c", "nginx.conf"])
        .status()
        .context("cannot run nginx (.ci/setup installs it)")?;
    ensure!(st.success(), "nginx did not start");
    let measured = (|| -> Result<String> {
        let url = |port: u16, tls: bool| match tls {
            true => format!("https://bench.localhost:{port}/version"),
            false => format!("http://plain.localhost:{port}/version"),
        };
        for u in [
            url(edge_http, false),
            url(edge_tls, true),
            url(nginx_http, false),
            url(nginx_tls, true),
        ] {
            curl_until_ok_insecure(&u)?;
        }
        // Latency with one connection (the time a request spends in the proxy, nothing
        // queued behind it); throughput with 20 (every core busy).
        let mut runs: std::collections::BTreeMap<(&str, bool), Vec<Load>> = Default::default();
        for round in 0..rounds {
            p.message(&format!(
                "wrk straight, edge, nginx (HTTP, TLS; 1 and 20 connections): round {} of {rounds}",
                round + 1
            ));
            for (what, u) in [
                ("direct", format!("http://{ip}:8080/version")),
                ("edge", url(edge_http, false)),
                ("nginx", url(nginx_http, false)),
                ("edge-tls", url(edge_tls, true)),
                ("nginx-tls", url(nginx_tls, true)),
            ] {
                for many in [false, true] {
                    let l = wrk_result(wrk_with(&u, 4, if many { 20 } else { 1 })?)?;
                    ensure!(l.errors == 0 && l.non_2xx == 0, "{what}: requests failed");
                    runs.entry((what, many)).or_default().push(l);
                }
            }
        }
        let p50 = |w: &str| {
            median(
                &mut runs[&(w, false)]
                    .iter()
                    .map(|l| l.p50_ms)
                    .collect::<Vec<_>>(),
            )
        };
        let rps = |w: &str| {
            median(
                &mut runs[&(w, true)]
                    .iter()
                    .map(|l| l.requests as f64 / 4.0)
                    .collect::<Vec<_>>(),
            )
        };
        let direct = p50("direct");
        let mut said = Vec::new();
        for (ours, theirs, what) in [
            ("edge", "nginx", "plain HTTP"),
            ("edge-tls", "nginx-tls", "TLS"),
        ] {
            let (a, b) = (
                (p50(ours) - direct).max(0.001),
                (p50(theirs) - direct).max(0.001),
            );
            figures.push(Figure {
                what: format!(
                    "edge's added p50 per request against nginx's, {what}, one keep-alive connection: {a:.3} ms vs {b:.3} ms (straight to the container {direct:.3} ms; median of {rounds})"
                ),
                value: format!("{:.2}x", a / b),
                goal: "<= 1.25x".into(),
                met: Some(a / b <= 1.25),
            });
            let (ra, rb) = (rps(ours), rps(theirs));
            figures.push(Figure {
                what: format!(
                    "edge's requests per second against nginx's, {what}, wrk -c20 keep-alive: {ra:.0} vs {rb:.0} (nginx's over the edge's)"
                ),
                value: format!("{:.2}x", rb / ra),
                goal: "<= 1.25x".into(),
                met: Some(rb / ra <= 1.25),
            });
            said.push(format!(
                "{what}: {:.2}x added p50, {:.2}x rps",
                a / b,
                rb / ra
            ));
        }
        Ok(said.join("; "))
    })();
    let _ = edge.kill();
    let _ = edge.wait();
    let _ = Command::new("nginx")
        .arg("-p")
        .arg(dir.join("nginx"))
        .args(["-c", "nginx.conf", "-s", "stop"])
        .status();
    measured
}

/// Waits until `url` answers 200 itself (not a redirect), its certificate unchecked.
fn curl_until_ok_insecure(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()?
        .stdout
        != b"200"
    {
        ensure!(Instant::now() < deadline, "{url} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs `pymdeploy promote` or `rollback` with `--json`: the seconds from its start to
/// the step's `step_finished` event (live serves the new version, verified), and to the
/// command's exit (the replaced version drained and stopped too).
fn timed_switch(pymdeploy: &Path, svc: &Path, target: &Path, what: &str) -> Result<(f64, f64)> {
    use std::io::BufRead;
    let t = Instant::now();
    let mut child = Command::new(pymdeploy)
        .args([what, "--json"])
        .current_dir(svc)
        .env("CARGO_TARGET_DIR", target)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut serving = None;
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines() {
        let event: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        if event["event"] == "step_finished" && event["step"] == what {
            serving = Some(t.elapsed().as_secs_f64());
        }
    }
    ensure!(child.wait()?.success(), "pymdeploy {what} failed");
    Ok((
        serving.context("no step_finished event")?,
        t.elapsed().as_secs_f64(),
    ))
}

fn curl_until_ok(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("curl")
        .args(["-sf", "-o", "/dev/null", url])
        .status()?
        .success()
    {
        ensure!(Instant::now() < deadline, "{url} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

static PLAIN_ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The plain script's live proxy: Debian's nginx on the host, listening on the live port,
/// its one upstream rewritten and reloaded gracefully at each switch.
struct Nginx {
    dir: PathBuf,
    live: u16,
}

impl Nginx {
    fn start(work: &Path, live: u16) -> Result<Nginx> {
        if Command::new("nginx").arg("-v").output().is_err() {
            let st = Command::new("apt-get")
                .args(["install", "-y", "-q", "nginx-light"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()?;
            ensure!(
                st.success(),
                "the bench's plain blue/green needs nginx: apt-get install nginx-light"
            );
        }
        let dir = work.join("nginx");
        std::fs::create_dir_all(dir.join("logs"))?;
        let nginx = Nginx { dir, live };
        nginx.write_conf(None)?;
        let st = Command::new("nginx")
            .args(["-p"])
            .arg(&nginx.dir)
            .args(["-c", "nginx.conf"])
            .status()?;
        ensure!(st.success(), "nginx did not start");
        Ok(nginx)
    }

    fn write_conf(&self, upstream: Option<u16>) -> Result<()> {
        let server = upstream
            .map(|p| format!("server 127.0.0.1:{p};"))
            .unwrap_or_else(|| "server 127.0.0.1:9 down;".into());
        let conf = format!(
            "daemon on;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\nworker_processes 1;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  upstream app {{ {server} keepalive 32; }}\n  server {{\n    listen 127.0.0.1:{live};\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            dir = self.dir.display(),
            live = self.live
        );
        std::fs::write(self.dir.join("nginx.conf"), conf)?;
        Ok(())
    }

    /// Points the live port at `port`: new workers take new requests, old ones finish
    /// theirs and exit. Returns once the old workers are gone (the drain: until then one
    /// may still accept a connection and route it the old way).
    fn route(&self, port: u16) -> Result<()> {
        let old = self.workers()?;
        self.write_conf(Some(port))?;
        let st = Command::new("nginx")
            .args(["-p"])
            .arg(&self.dir)
            .args(["-c", "nginx.conf", "-s", "reload"])
            .status()?;
        ensure!(st.success(), "nginx reload failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while old
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            ensure!(
                Instant::now() < deadline,
                "nginx's old workers did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The master's worker processes.
    fn workers(&self) -> Result<Vec<String>> {
        let master = std::fs::read_to_string(self.dir.join("nginx.pid"))?
            .trim()
            .to_string();
        let out = Command::new("pgrep").args(["-P", &master]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .args(["-p"])
            .arg(&self.dir)
            .args(["-c", "nginx.conf", "-s", "stop"])
            .status();
    }
}

/// The eight steps by hand: cargo test, the build and local acceptance as in
/// `plain_build_accept`, docker push, docker pull by digest, a staging container and its
/// acceptance, a new live container replacing the old one, and live acceptance.
fn plain_deploy(
    svc: &Path,
    target: &Path,
    registry: &str,
    nginx: &Nginx,
    live: u16,
    staging: u16,
) -> Result<()> {
    let name = svc.file_name().unwrap().to_str().unwrap();
    let run = |program: &str, args: &[&str]| -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .current_dir(svc)
            .env("CARGO_TARGET_DIR", target)
            .env("DOCKER_BUILDKIT", "0")
            .output()?;
        ensure!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let accept = |port: u16, env: &str| -> Result<()> {
        let out = Command::new("cargo")
            .args(["test", "--manifest-path", "testaccept/Cargo.toml"])
            .current_dir(svc)
            .env("CARGO_TARGET_DIR", target)
            .env("PYM_SERVER_HOST", "127.0.0.1")
            .env("PYM_SERVER_PORT", port.to_string())
            .env("PYM_ENV", env)
            .output()?;
        ensure!(
            out.status.success(),
            "plain acceptance against {env} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run("cargo", &["test"])?;
    plain_build_accept(svc, target)?;
    let tag = format!("{registry}/bench/{name}:plain-{}", std::process::id());
    run("docker", &["tag", &format!("{name}:plain"), &tag])?;
    run("docker", &["push", "-q", &tag])?;
    let digest = run(
        "docker",
        &["inspect", "--format", "{{index .RepoDigests 0}}", &tag],
    )?;
    run("docker", &["pull", "-q", &digest])?;
    let _ = Command::new("docker")
        .args(["rm", "-f", "bench-plain-staging"])
        .output();
    run(
        "docker",
        &[
            "run",
            "-d",
            "--init",
            "--name",
            "bench-plain-staging",
            "-e",
            "PYM_ENV=staging",
            "-p",
            &format!("127.0.0.1:{staging}:8080"),
            &digest,
        ],
    )?;
    curl_until_ok(&format!("http://127.0.0.1:{staging}/ping"))?;
    accept(staging, "staging")?;
    // Blue/green by hand, the same work as promote: the new container beside the old
    // one, its health, nginx's upstream switched by a graceful reload (the old workers
    // finish their requests: the drain), /version checked on the live port, the old
    // container stopped.
    let round = std::process::id() as u64 * 1000
        + PLAIN_ROUND.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (new, version) = (
        format!("bench-plain-live-{round}"),
        format!("plain-{round}"),
    );
    run(
        "docker",
        &[
            "run",
            "-d",
            "--init",
            "--name",
            &new,
            "-e",
            "PYM_ENV=live",
            "-e",
            &format!("PYM_VERSION={version}"),
            "-p",
            "127.0.0.1::8080",
            &digest,
        ],
    )?;
    let port = run("docker", &["port", &new, "8080"])?
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .unwrap_or_default()
        .to_string();
    curl_until_ok(&format!("http://127.0.0.1:{port}/ping"))?;
    nginx.route(port.parse()?)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{live}/version")])
            .output()?;
        if String::from_utf8_lossy(&out.stdout).contains(&version) {
            break;
        }
        ensure!(Instant::now() < deadline, "nginx never routed to {new}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old: Vec<String> = run(
        "docker",
        &["ps", "-q", "--filter", "name=^bench-plain-live-"],
    )?
    .lines()
    .map(str::to_string)
    .collect();
    for id in old {
        if run("docker", &["inspect", "--format", "{{.Name}}", &id])? != format!("/{new}") {
            run("docker", &["stop", &id])?;
        }
    }
    accept(live, "live")?;
    Ok(())
}

/// Starts a server that answers 200 on /ping only after a delay, and measures how long
/// after it started answering our poll saw it.
fn readiness_latencies(n: usize) -> Result<Vec<f64>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for _ in 0..n {
        // Reserve a port, release it, and bind it again later: until then, connections
        // are refused, as with a container that has not started listening.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || -> Result<()> {
            std::thread::sleep(Duration::from_millis(300));
            let listener = TcpListener::bind(("127.0.0.1", port))?;
            tx.send(Instant::now()).ok();
            let (mut s, _) = listener.accept()?;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf)?;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")?;
            Ok(())
        });
        let seen = rt.block_on(pymdeploy::ops::service::poll_health(
            "127.0.0.1",
            port,
            "/ping",
            |s| s == 200,
            Duration::from_secs(10),
            std::future::pending(),
        ));
        let seen_at = Instant::now();
        seen.context("the poll did not see the server")?;
        let ready_at = rx.recv().context("the server did not start")?;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
        out.push(seen_at.duration_since(ready_at).as_secs_f64());
    }
    Ok(out)
}

/// A minimal service whose context holds a 1 GiB file, ignored or not.
fn context_service(work: &Path, include: bool) -> Result<PathBuf> {
    let dir = work.join(if include {
        "ctx-included"
    } else {
        "ctx-ignored"
    });
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("pym-config.yaml"),
        "name: pym-bench-ctx\ndeploy_target: docker\n",
    )?;
    let copy = if include {
        "COPY big.bin /big.bin\n"
    } else {
        "COPY pym-config.yaml /\n"
    };
    std::fs::write(dir.join("Dockerfile"), format!("FROM scratch\n{copy}"))?;
    std::fs::write(
        dir.join(".dockerignore"),
        if include { "" } else { "big.bin\n" },
    )?;
    std::fs::write(dir.join(".gitignore"), "big.bin\n")?;
    // Written, not sparse: a real file of random-looking bytes, read from disk.
    let mut f = std::fs::File::create(dir.join("big.bin"))?;
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for _ in 0..1024 {
        f.write_all(&chunk)?;
    }
    for args in [
        vec!["init", "-q"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-q",
            "-m",
            "ctx",
        ],
    ] {
        ensure!(
            Command::new("git")
                .args(&args)
                .current_dir(&dir)
                .status()?
                .success(),
            "git {args:?}"
        );
    }
    Ok(dir)
}

/// Runs a command and returns its peak resident set size in KiB.
fn peak_rss(cmd: &mut Command) -> Result<(u64, Duration)> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().context("cannot start the measured command")?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 writes a whole one.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own child's, not yet waited for.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    ensure!(pid > 0, "wait4 failed");
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the measured command failed:\n{stderr}"
    );
    Ok((usage.ru_maxrss as u64, t.elapsed()))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
