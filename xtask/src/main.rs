//! This repository's own automation, built on the pymdeploy library (we use what we
//! ship: its printer, its command runner, its steps' building blocks).
//!
//! - `cargo xtask ci`: check formatting and lints, set up the machine (Docker engine,
//!   base image) and run every test
//! - `cargo xtask demo`: set up, scaffold a demo service, and deploy it on the docker target
//! - `cargo xtask bench`: the benchmarks, as ratios against the plain tools

mod bench;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pymdeploy::output::{Outcome, Printer, StepProgress, StepReport};
use pymdeploy::xshell::{Shell, cmd};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "pymdeploy's own automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check formatting and lints, set up the machine (Docker engine, base image) and run
    /// the whole test suite
    Ci,
    /// Set up the machine, scaffold a demo service, and deploy it on the docker target
    Demo {
        /// Where the demo service is created (replaced if it exists)
        #[arg(long, default_value = "target/demo/hello")]
        path: PathBuf,
    },
    /// Run the benchmarks and print their figures
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::from_env();
    let started = Instant::now();
    let mut reports = Vec::new();
    let mut closing = None;
    let result = match cli.command {
        Command::Ci => ci(&printer, &mut reports, &mut closing),
        Command::Demo { path } => demo(&printer, &mut reports, &path),
        Command::Bench(args) => bench::run(&printer, &mut reports, args),
    };
    printer.summary(&reports, started.elapsed());
    if let Some(line) = closing {
        printer.data(&line);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&e);
            ExitCode::FAILURE
        }
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the repository")
        .to_path_buf()
}

/// Runs one named stage with its own progress display and a row in the summary.
pub fn stage(
    printer: &Printer,
    reports: &mut Vec<StepReport>,
    name: &str,
    f: impl FnOnce(&StepProgress<'_>) -> Result<String>,
) -> Result<String> {
    let started = Instant::now();
    let progress = printer.step(name);
    let result = f(&progress);
    let (outcome, note) = match &result {
        Ok(note) => (Outcome::Ok, note.clone()),
        Err(e) => (Outcome::Failed, format!("{e}")),
    };
    progress.finish(&outcome, &note);
    reports.push(StepReport {
        name: name.to_string(),
        outcome,
        duration: started.elapsed(),
        note,
        tail: Vec::new(),
    });
    result
}

/// `.ci/setup`: the Docker engine, the base image, the registry tools.
pub fn setup(printer: &Printer, reports: &mut Vec<StepReport>) -> Result<()> {
    stage(printer, reports, "setup", |p| {
        let sh = Shell::new()?;
        let script = root().join(".ci/setup");
        pymdeploy::ops::cmd::stream(cmd!(sh, "bash {script}"), &root(), p, false)
            .context("machine setup failed")?;
        Ok("docker engine and base image ready".into())
    })?;
    Ok(())
}

/// The format and lint gate, before anything slow: `cargo fmt --check` and clippy on
/// every crate and feature, its warnings as errors.
fn lint(printer: &Printer, reports: &mut Vec<StepReport>) -> Result<()> {
    stage(printer, reports, "fmt", |p| {
        let sh = Shell::new()?;
        pymdeploy::ops::cmd::stream(cmd!(sh, "cargo fmt --all --check"), &root(), p, false)
            .context("the code is not formatted: run `cargo fmt --all`")?;
        Ok("formatted".into())
    })?;
    stage(printer, reports, "clippy", |p| {
        let sh = Shell::new()?;
        let cmd = cmd!(
            sh,
            "cargo clippy --workspace --locked --all-features --all-targets -- -D warnings"
        );
        pymdeploy::ops::cmd::stream(cmd, &root(), p, false)
            .context("clippy found something: fix what it says above")?;
        Ok("no warnings".into())
    })?;
    Ok(())
}

fn ci(
    printer: &Printer,
    reports: &mut Vec<StepReport>,
    closing: &mut Option<String>,
) -> Result<()> {
    lint(printer, reports)?;
    setup(printer, reports)?;
    let mut tally = Default::default();
    let result = stage(printer, reports, "test", |p| {
        let sh = Shell::new()?;
        // With every feature (each cloud target's, docker-tls), so every target's tests
        // run; services compile only the feature their target needs, in their own xtask.
        // Each engine test's time lands in one file, the slowest listed after the run; a
        // failure's reason is the last thing it prints (no backtrace after it).
        let times = root().join("target/test-times.tsv");
        let _ = std::fs::remove_file(&times);
        let cmd = cmd!(sh, "cargo test --workspace --locked --all-features")
            .env("CI", "true")
            .env("RUST_BACKTRACE", "0")
            .env("PYM_TEST_TIMES", &times);
        let run =
            pymdeploy::ops::cmd::stream(cmd, &root(), p, false).context("the test suite failed");
        tally = p.tests();
        slowest_tests(p, &times);
        // The live proxies' images are shared by the tests' services; the last test to
        // finish cannot know it is last, so the run removes those no container uses.
        let sh = Shell::new()?;
        let images = cmd!(sh, "docker images -q pym-proxy")
            .quiet()
            .read()
            .unwrap_or_default();
        for id in images.split_whitespace() {
            let _ = cmd!(sh, "docker rmi {id}")
                .quiet()
                .ignore_status()
                .ignore_stderr()
                .ignore_stdout()
                .run();
        }
        run?;
        Ok(format!("{} passed", tally.passed))
    });
    // One closing line for whoever reads the log's end: the counts of every test binary.
    let pymdeploy::output::TestTally {
        passed,
        failed,
        ignored,
        ..
    } = tally;
    *closing = Some(format!(
        "tests: {passed} passed, {failed} failed, {ignored} skipped"
    ));
    result.map(drop)
}

/// The ten slowest engine tests of the run, and the sum of all of their times (against
/// the wall clock, how well the tests overlap).
fn slowest_tests(p: &pymdeploy::output::StepProgress<'_>, times: &Path) {
    let Ok(text) = std::fs::read_to_string(times) else {
        return;
    };
    let mut rows: Vec<(f64, &str)> = text
        .lines()
        .filter_map(|l| {
            let (secs, name) = l.split_once('\t')?;
            Some((secs.parse().ok()?, name))
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let sum: f64 = rows.iter().map(|r| r.0).sum();
    p.line(&format!(
        "{} engine tests took {:.0} s together; the slowest:",
        rows.len(),
        sum
    ));
    for (secs, name) in rows.iter().take(10) {
        p.line(&format!("  {secs:>6.1} s  {name}"));
    }
}

/// The demo's registry: Debian's docker-registry on 127.0.0.1:5000, without auth, its
/// data under target/demo/registry. Started detached, so the deployed demo can be
/// deployed again later; left running, like the demo's live service.
const DEMO_REGISTRY: &str = "127.0.0.1:5000";

fn demo_registry(printer: &Printer, reports: &mut Vec<StepReport>) -> Result<()> {
    stage(printer, reports, "registry", |_| {
        if std::net::TcpStream::connect(DEMO_REGISTRY).is_ok() {
            return Ok(format!("{DEMO_REGISTRY} already answers"));
        }
        let dir = root().join("target/demo/registry");
        std::fs::create_dir_all(&dir)?;
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {DEMO_REGISTRY}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config)?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = std::process::Command::new("setsid")
            .arg("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start docker-registry (run .ci/setup)")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(DEMO_REGISTRY).is_ok() {
                return Ok(format!(
                    "started on {DEMO_REGISTRY} (pid {}; `kill {}` stops it)",
                    child.id(),
                    child.id()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        anyhow::bail!(
            "the registry did not start; see {}",
            dir.join("registry.log").display()
        )
    })?;
    Ok(())
}

/// The `service_id` of a demo already on the engine: of the containers named for `hello`
/// that run the demo registry's image.
fn demo_on_engine() -> Option<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=org.pymacaron.name=hello",
            "--format",
            "{{.Image}} {{.Label \"org.pymacaron.service-id\"}}",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (image, id) = l.split_once(' ')?;
        image
            .starts_with(&format!("{DEMO_REGISTRY}/demo/hello"))
            .then(|| id.trim().to_string())
    })
}

fn demo(printer: &Printer, reports: &mut Vec<StepReport>, path: &Path) -> Result<()> {
    setup(printer, reports)?;
    demo_registry(printer, reports)?;
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root().join(path)
    };
    stage(printer, reports, "new", |p| {
        // A demo made again is the same service (its `service_id` kept): it deploys as the
        // next version of the one still live, which the engine would refuse as another
        // repository's service of the same name. The demo on the engine may be another
        // checkout's (the engine outlives a clone): its id is read there, from the
        // containers that run the demo registry's image.
        let previous_id = demo_on_engine()
            .or_else(|| {
                let c = std::fs::read_to_string(path.join("pym-config.yaml")).ok()?;
                c.lines()
                    .find_map(|l| l.strip_prefix("service_id:"))
                    .map(|id| id.trim().to_string())
            })
            .filter(|id| !id.is_empty());
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove the old demo at {}", path.display()))?;
        }
        let sh = Shell::new()?;
        let repo = root();
        let cmd = cmd!(
            sh,
            "cargo run --quiet --bin pymdeploy -- new hello --path {path} --pymdeploy-path {repo}"
        );
        pymdeploy::ops::cmd::stream(cmd, &repo, p, false)?;
        // Point it at the demo registry, on ports unlikely to be taken.
        let config = path.join("pym-config.yaml");
        let text = std::fs::read_to_string(&config)?;
        let mut text = text.replace(
            "# docker_repo: registry.example.com/team",
            &format!("docker_repo: {DEMO_REGISTRY}/demo\nlive_port: 18080\nstaging_port: 18081"),
        );
        if let Some(id) = &previous_id {
            text = text
                .lines()
                .map(|l| match l.starts_with("service_id:") {
                    true => format!("service_id: {id}"),
                    false => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
        }
        std::fs::write(&config, text)?;
        let sh = Shell::new()?;
        sh.change_dir(&path);
        cmd!(sh, "git -c user.name=pymdeploy-demo -c user.email=demo@localhost commit -qam 'Deploy to the demo registry'").quiet().run()?;
        Ok(format!("{}", path.display()))
    })?;
    // The binary its xtask runs: the one `new` just ran (this checkout, the docker target's
    // features), where the xtask looks first, so neither this deploy nor the user's next
    // one installs it again.
    stage(printer, reports, "binary", |_| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        let built = target.join("debug/pymdeploy");
        let bin = pymdeploy_xtask::install_root(&[]).join("bin");
        std::fs::create_dir_all(&bin)?;
        let part = bin.join(format!(".pymdeploy-{}", std::process::id()));
        std::fs::copy(&built, &part).with_context(|| format!("cannot copy {}", built.display()))?;
        std::fs::rename(&part, bin.join("pymdeploy"))?;
        Ok(format!("{}", bin.join("pymdeploy").display()))
    })?;
    // The demo's own pipeline, in the foreground: what a user of the service sees.
    printer.status(
        "Deploying",
        &format!("cargo xtask deploy in {}", path.display()),
    );
    let status = std::process::Command::new(env!("CARGO"))
        .args(["xtask", "deploy"])
        .current_dir(&path)
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(status.success(), "the demo's deploy failed");
    printer.status(
        "Live",
        "http://127.0.0.1:18080/version (staging: http://127.0.0.1:18081/version)",
    );
    printer.data(&path.display().to_string());
    Ok(())
}
