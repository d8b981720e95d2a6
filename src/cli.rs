//! The command line, shared by the `pymdeploy` binary and every service's xtask.
//!
//! The fixed commands are declared with clap's derive; the pipeline's steps are added as
//! subcommands at run time, so a team's own steps in `xtask/src/main.rs` get their own
//! subcommand and `--help` line like the standard ones.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{self, Config, PymEnv, TargetKind};
use crate::ctx::{Ctx, Options};
use crate::error::hinted;
use crate::ops::state;
use crate::output::Printer;
use crate::pipeline::{Pipeline, Reach};
use crate::scaffold;

#[derive(Args, Clone, Debug, Default)]
pub struct GlobalArgs {
    /// The service root [default: the nearest directory upwards holding pym-config.yaml]
    #[arg(short = 'C', long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Allow a working tree with uncommitted changes; the version ends in `-dirty`
    #[arg(long, global = true)]
    pub allow_dirty: bool,
    /// Build the image even if one exists for this commit
    #[arg(long, global = true)]
    pub force_build: bool,
    /// Deploy a version even though a rollback went away from it
    #[arg(long, global = true)]
    pub redeploy: bool,
    /// Emit one JSON event per line on stdout (progress stays on stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// Take over the deploy lock even if another deploy holds it
    #[arg(long, global = true)]
    pub break_lock: bool,
}

#[derive(Args, Clone, Debug, Default)]
pub struct DeployArgs {
    /// Start at this step
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,
    /// Stop after this step
    #[arg(long, value_name = "STEP")]
    pub to: Option<String>,
    /// Leave this step out (repeatable)
    #[arg(long, value_name = "STEP")]
    pub skip: Vec<String>,
    /// Leave out the unit tests
    #[arg(long)]
    pub no_test: bool,
    /// Stop before `push`: test, build and accept locally only
    #[arg(long)]
    pub no_push: bool,
    /// Stop after `push`: do not stage or promote
    #[arg(long)]
    pub no_deploy: bool,
    /// Print every action the run would take, in order, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the last deploy of this version from the step that did not finish
    #[arg(long)]
    pub resume: bool,
}

impl DeployArgs {
    /// Whether any flag chooses steps.
    fn has_selection(&self) -> bool {
        self.from.is_some()
            || self.to.is_some()
            || !self.skip.is_empty()
            || self.no_test
            || self.no_push
            || self.no_deploy
    }
}

/// Commands every service's xtask has.
#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Run the whole pipeline, stopping at the first failure
    Deploy(DeployArgs),
    /// List the deploys of this service: who, when, which version, how it went
    History,
    /// Run the acceptance tests against an environment
    Accept {
        /// local (a container of the built image), staging or live
        #[arg(long, value_enum)]
        env: PymEnv,
    },
    /// Print the merged configuration for an environment (secrets masked)
    Config {
        /// The environment whose overlay is applied
        #[arg(long, value_enum, default_value_t = PymEnv::Local)]
        env: PymEnv,
        /// List every key pym-config.yaml accepts instead
        #[arg(long, conflicts_with = "schema")]
        keys: bool,
        /// Print the JSON Schema of pym-config.yaml (for editors) instead
        #[arg(long)]
        schema: bool,
    },
    /// Print the version the current commit builds as
    Version,
    /// Make the docker target's live proxy image here; with --push, push it for `proxy_image`
    ProxyImage {
        /// A registry repository (REGISTRY/TEAM) to push it to; prints the image to name
        #[arg(long, value_name = "REPO")]
        push: Option<String>,
    },
    /// Answer every request with 503 and the maintenance page (on), or serve again (off);
    /// the version keeps running
    Maintenance {
        #[arg(value_enum)]
        mode: OnOff,
        /// live, or staging where it is served through the edge
        #[arg(long, value_enum, default_value_t = PymEnv::Live)]
        env: PymEnv,
    },
    /// Write the CI workflow that deploys this service (GitHub Actions:
    /// .github/workflows/deploy.yml, one job per environment)
    Ci {
        #[arg(value_enum)]
        provider: CiProvider,
        /// Replace a workflow that is there and differs
        #[arg(long)]
        force: bool,
        /// Print the workflow instead of writing it
        #[arg(long)]
        print: bool,
    },
    /// Remove old versions beyond `keep_previous` (prints what it would do unless --execute)
    Cleanup {
        /// Terminate them, instead of only listing them
        #[arg(long)]
        execute: bool,
    },
    /// Take the service off its target: what pymdeploy made for staging, live or both
    /// goes; the deploy record and this machine's history stay
    Destroy {
        /// staging, live, or all (both)
        #[arg(long, value_enum)]
        env: crate::targets::Scope,
        /// Go on without asking (needed where there is no terminal to ask on)
        #[arg(long)]
        yes: bool,
        /// Print what would be removed, read from the target now, and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// The live proxy of the docker target, routing by the route file --state; or with
    /// --sites, the edge shared by the services of one engine (runs inside its container)
    #[command(name = "__proxy", hide = true)]
    Proxy {
        #[arg(long)]
        listen: String,
        #[arg(long, required_unless_present = "sites")]
        state: Option<PathBuf>,
        /// The edge's sites directory
        #[arg(long, requires = "listen_tls")]
        sites: Option<PathBuf>,
        /// The edge's TLS listener
        #[arg(long)]
        listen_tls: Option<String>,
        /// The port clients reach the edge's HTTPS listener on (redirects name it)
        #[arg(long, default_value_t = 443)]
        https_port: u16,
        /// Where the admin endpoint listens (the container's loopback)
        #[arg(long, default_value = "127.0.0.1:8079")]
        admin: String,
    },
    /// Adds or replaces a site of the edge, its conf (JSON) read from stdin, exactly
    /// --bytes of it; or removes it (run inside the edge's container)
    #[command(name = "__edge-site", hide = true)]
    EdgeSite {
        key: String,
        #[arg(long)]
        sites: PathBuf,
        #[arg(long, conflicts_with = "remove")]
        bytes: Option<usize>,
        #[arg(long)]
        remove: bool,
    },
    /// Puts a site of the live proxy or the edge in maintenance (the page read from stdin,
    /// exactly --bytes of it) or out of it (run inside its container)
    #[command(name = "__proxy-maintenance", hide = true)]
    ProxyMaintenance {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        off: bool,
        #[arg(long, default_value_t = 300)]
        retry_after: u32,
        #[arg(long, default_value_t = 0)]
        bytes: usize,
    },
    /// Prints the edge's sites, routes and certificates as JSON (run inside its container)
    #[command(name = "__edge-status", hide = true)]
    EdgeStatus,
    /// Points the live proxy at a new upstream (run inside its container)
    #[command(name = "__proxy-route", hide = true)]
    ProxyRoute {
        upstream: String,
        /// Where to connect to it (an IP and port), if not by its name
        #[arg(long)]
        addr: Option<String>,
        #[arg(long)]
        state: PathBuf,
    },
    /// Sends a share of the live proxy's requests to a canary upstream, or none with
    /// --share 0 (run inside its container)
    #[command(name = "__proxy-canary", hide = true)]
    ProxyCanary {
        upstream: String,
        /// Where to connect to it (an IP and port), if not by its name
        #[arg(long)]
        addr: Option<String>,
        /// In hundredths of a percent (10000: all)
        #[arg(long)]
        share: u32,
        #[arg(long)]
        state: PathBuf,
    },
    /// Prints what the live proxy counted per upstream over the last seconds, as JSON, or
    /// with --prometheus all it counted, in Prometheus' text format (run inside its
    /// container)
    #[command(name = "__proxy-counts", hide = true)]
    ProxyCounts {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long)]
        prometheus: bool,
    },
    /// Prints the live proxy's route file (run inside its container)
    #[command(name = "__proxy-routes", hide = true)]
    ProxyRoutes {
        #[arg(long)]
        state: PathBuf,
    },
    /// Waits until an upstream of the live proxy has no request in flight (run inside its
    /// container); prints how many were left
    #[command(name = "__proxy-drain", hide = true)]
    ProxyDrain {
        upstream: String,
        #[arg(long)]
        timeout_ms: u64,
    },
}

/// The CI systems `ci` writes a workflow for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CiProvider {
    Github,
}

/// `maintenance on|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "This service's deploy pipeline",
    arg_required_else_help = true
)]
struct XtaskCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<ServiceCommand>,
}

#[derive(Parser, Debug)]
#[command(
    name = "pymdeploy",
    version,
    about = "Test, build, accept and deploy a microservice",
    after_help = "Without a command, in a service root: runs the service's own pipeline (`cargo xtask deploy`)."
)]
struct PymCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<PymCommand>,
}

#[derive(Subcommand, Debug)]
enum PymCommand {
    /// Create a new service repository
    New(NewArgs),
    /// Add the pipeline (xtask crate, cargo alias, pym-config.yaml) to an existing repository
    Init(InitArgs),
    /// Move the service to another deploy target: deploy_target, the keys it reads and
    /// needs, the xtask's feature
    Target(TargetArgs),
    #[command(flatten)]
    Service(ServiceCommand),
}

#[derive(Args, Debug)]
struct NewArgs {
    /// The service's name: lowercase letters, digits and dashes
    name: String,
    /// Where `stage` and `promote` deploy
    #[arg(long, value_enum, default_value_t = TargetKind::Docker)]
    target: TargetKind,
    /// The service's language
    #[arg(long, value_enum, default_value_t = scaffold::Lang::Rust)]
    lang: scaffold::Lang,
    /// The directory to create [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Where the service's xtask gets the pymdeploy library [default: where this binary was
/// built from: crates.io, the git repository of `cargo install --git`, or the checkout of
/// `cargo install --path`]
#[derive(Args, Debug)]
struct SourceArgs {
    /// A pymdeploy checkout on this machine
    #[arg(long, value_name = "DIR", env = "PYMDEPLOY_PATH")]
    pymdeploy_path: Option<PathBuf>,
    /// A pymdeploy git repository, which teammates and CI can reach too
    #[arg(long, value_name = "URL", env = "PYMDEPLOY_GIT")]
    pymdeploy_git: Option<String>,
    /// The revision of --pymdeploy-git (a commit, tag or branch)
    #[arg(long, value_name = "REV", requires = "pymdeploy_git")]
    pymdeploy_rev: Option<String>,
}

impl SourceArgs {
    fn resolve(self) -> Result<scaffold::Source> {
        scaffold::Source::resolve(self.pymdeploy_path, self.pymdeploy_git, self.pymdeploy_rev)
    }
}

#[derive(Args, Debug)]
struct InitArgs {
    /// The service's name [default: the directory's name]
    #[arg(long)]
    name: Option<String>,
    /// Where `stage` and `promote` deploy
    #[arg(long, value_enum, default_value_t = TargetKind::Docker)]
    target: TargetKind,
    /// Overwrite files that exist
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Args, Debug)]
struct TargetArgs {
    /// The target to deploy to from now on
    #[arg(value_enum)]
    target: TargetKind,
    /// A value for a key of pym-config.yaml (repeatable), like `--set gcp_region=us-central1`;
    /// a key the target needs and no file sets is asked on a terminal
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Commit the files it changes (else it says what to commit)
    #[arg(long)]
    commit: bool,
}

/// The entry point of a service's xtask: `fn main() -> ExitCode { pymdeploy::xtask(pipeline) }`.
pub fn xtask(pipeline: Pipeline) -> ExitCode {
    crate::targets::RUN_AS_XTASK.store(true, std::sync::atomic::Ordering::Relaxed);
    process_setup();
    let cmd = with_steps(XtaskCli::command(), &pipeline).bin_name("cargo xtask");
    let matches = cmd.get_matches();
    let printer = Printer::from_env();
    let result = match step_subcommand(&matches, &pipeline) {
        Some((what, global)) => run_pipeline(&pipeline, global, what, printer),
        None => match XtaskCli::from_arg_matches(&matches) {
            Ok(cli) => match cli.command {
                Some(c) => service_command(&pipeline, cli.global, c, printer),
                None => Ok(ExitCode::SUCCESS),
            },
            Err(e) => e.exit(),
        },
    };
    finish(result)
}

/// The variable a service's xtask (the `pymdeploy-xtask` crate) passes its pipeline in
/// when it runs this binary.
const XTASK_PIPELINE: &str = "PYMDEPLOY_XTASK_PIPELINE";

/// The entry point of the `pymdeploy` binary: a service's own pipeline when its xtask runs
/// it (`pymdeploy-xtask`), else `new`, `init` and the standard pipeline.
pub fn pymdeploy() -> ExitCode {
    if let Some(spec) = std::env::var_os(XTASK_PIPELINE) {
        // SAFETY: no other thread runs yet. The steps' own commands (a service's tests that
        // run pymdeploy, say) must not inherit the pipeline.
        unsafe { std::env::remove_var(XTASK_PIPELINE) };
        return match Pipeline::from_spec(&spec.to_string_lossy()) {
            Ok(pipeline) => xtask(pipeline),
            Err(e) => finish(Err(e.context(
                "update the xtask's pymdeploy-xtask dependency and this binary to the same version",
            ))),
        };
    }
    process_setup();
    let pipeline = Pipeline::standard();
    let cmd = with_steps(PymCli::command(), &pipeline).long_version(long_version());
    let matches = cmd.get_matches();
    let printer = Printer::from_env();
    let result = match step_subcommand(&matches, &pipeline) {
        Some((what, global)) => run_pipeline(&pipeline, global, what, printer),
        None => match PymCli::from_arg_matches(&matches) {
            Ok(cli) => match cli.command {
                Some(PymCommand::New(a)) => new(a, &printer),
                Some(PymCommand::Init(a)) => init(a, &printer),
                Some(PymCommand::Target(a)) => switch_target(a, &cli.global, &printer),
                Some(PymCommand::Service(c)) => service_command(&pipeline, cli.global, c, printer),
                None => bare(&pipeline, cli.global, printer),
            },
            Err(e) => e.exit(),
        },
    };
    finish(result)
}

/// `pymdeploy --version`: the version, and the targets' features compiled in, which a
/// service's xtask (`pymdeploy-xtask`) reads to choose the binary it runs.
fn long_version() -> String {
    let features: Vec<&str> = [
        ("aws-beanstalk", cfg!(feature = "aws-beanstalk")),
        ("gcp-cloud-run", cfg!(feature = "gcp-cloud-run")),
        ("gke", cfg!(feature = "gke")),
        ("docker-tls", cfg!(feature = "docker-tls")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    match features.is_empty() {
        true => env!("CARGO_PKG_VERSION").to_string(),
        false => format!(
            "{} (features: {})",
            env!("CARGO_PKG_VERSION"),
            features.join(", ")
        ),
    }
}

/// The clap command for `pymdeploy` (for help snapshots and `debug_assert`).
/// What the process needs before anything runs: a file size limit (`ulimit -f`) must
/// fail a write with an error we report (EFBIG), not kill the process silently with
/// SIGXFSZ halfway through a build. Children inherit the setting, so cargo reports "File
/// too large" instead of dying too.
fn process_setup() {
    // SAFETY: setting a signal's disposition to ignore, before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

pub fn pymdeploy_command() -> clap::Command {
    with_steps(PymCli::command(), &Pipeline::standard())
}

/// The clap command for a service's xtask with the given pipeline.
pub fn xtask_command(pipeline: &Pipeline) -> clap::Command {
    with_steps(XtaskCli::command(), pipeline)
}

fn with_steps(mut cmd: clap::Command, pipeline: &Pipeline) -> clap::Command {
    for s in pipeline.runnable() {
        let dry_run = clap::Arg::new("dry-run").long("dry-run").action(clap::ArgAction::SetTrue).help("Print the actions this step would take, read from the target now, and change nothing");
        let mut sub = clap::Command::new(s.name().to_string())
            .about(s.about().to_string())
            .arg(dry_run);
        if let Some(help) = s.version_arg() {
            sub = sub.arg(
                clap::Arg::new("to")
                    .long("to")
                    .value_name("VERSION")
                    .help(help),
            );
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

fn step_subcommand<'a>(
    matches: &'a ArgMatches,
    pipeline: &Pipeline,
) -> Option<(What<'a>, GlobalArgs)> {
    let (name, sub) = matches.subcommand()?;
    if !pipeline.runnable().any(|s| s.name() == name) {
        return None;
    }
    let global = GlobalArgs::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
    let to = sub.try_get_one::<String>("to").ok().flatten().cloned();
    Some((What::One(name, sub.get_flag("dry-run"), to), global))
}

/// What a run of the pipeline's steps leaves for CI (`report`): `.pym/last-run.md` and
/// `.json`, and under GitHub Actions the job's summary and the step's outputs. A failure
/// to write them is a warning: the run's own outcome stands.
fn leave_report(
    ctx: &Ctx,
    command: &str,
    steps: &[crate::output::StepReport],
    total: Duration,
    error: Option<&anyhow::Error>,
) {
    let config = ctx.config();
    let outcome = match error {
        None => "ok",
        Some(e) if crate::error::interrupted(e) => "interrupted",
        Some(_) => "failed",
    };
    let mask = |s: String| ctx.out.mask(&s);
    let report = crate::report::RunReport {
        command: command.to_string(),
        service: config.name.clone(),
        target: config.deploy_target.to_string(),
        version: ctx.version().ok().map(|v| v.to_string()),
        // What this version's image is by digest: pushed, recorded, or the engine's ID.
        image: crate::targets::image_reference(ctx).ok(),
        staging_url: ctx.url(PymEnv::Staging).map(mask),
        live_url: ctx.url(PymEnv::Live).map(mask),
        outcome: outcome.to_string(),
        error: error.map(|e| mask(format!("{e:#}"))),
        steps: steps
            .iter()
            .map(|r| crate::output::StepReport {
                note: ctx.out.mask(&r.note),
                ..r.clone()
            })
            .collect(),
        total,
    };
    let written =
        report
            .write_files(&ctx.root)
            .and_then(|()| match crate::output::in_github_actions() {
                true => report.write_github(),
                false => Ok(()),
            });
    if let Err(e) = written {
        ctx.out
            .warn(&format!("the run's summary was not written: {e:#}"));
    }
}

fn finish(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            let interrupted = crate::error::interrupted(&e);
            Printer::from_env().error(&e);
            if interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn find_root(global: &GlobalArgs) -> Result<PathBuf> {
    if let Some(root) = &global.root {
        return Ok(root.clone());
    }
    let cwd = std::env::current_dir()?;
    let mut dir: &Path = &cwd;
    loop {
        if dir.join(config::CONFIG_FILE).is_file() {
            return Ok(dir.to_path_buf());
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => {
                return Err(hinted(
                    format!(
                        "no {} in {} or any directory above it",
                        config::CONFIG_FILE,
                        cwd.display()
                    ),
                    "run this in a service root, or create one with `pymdeploy new NAME` or `pymdeploy init`",
                ));
            }
        }
    }
}

fn open(global: GlobalArgs, printer: Printer) -> Result<Ctx> {
    open_for(global, printer, false)
}

fn open_for(global: GlobalArgs, printer: Printer, deploying: bool) -> Result<Ctx> {
    let root = find_root(&global)?;
    crate::output::set_source_root(&root);
    let opts = Options {
        allow_dirty: global.allow_dirty,
        force_build: global.force_build,
        redeploy: global.redeploy,
        deploying,
        ..Options::default()
    };
    Ctx::new(&root, opts, printer)
}

/// What to run: one step or command by name (and whether only to print its plan), or
/// `deploy`.
enum What<'a> {
    /// A step by name, whether only its plan, and its `--to VERSION`.
    One(&'a str, bool, Option<String>),
    Deploy(DeployArgs),
}

/// The locks that keep two runs from changing one service's target at once: this
/// machine's (a file lock), then the target's own (the docker engine's, which excludes
/// other machines deploying to it).
fn deploy_lock(
    ctx: &Ctx,
    command: &str,
    break_lock: bool,
) -> Result<(state::Lock, Option<crate::targets::Guard>)> {
    let local = state::lock(&state::key(ctx.config()), command, break_lock, |m| {
        ctx.out.warn(m)
    })?;
    // A target this build lacks has no lock (a run that reaches it is refused anyway).
    let target = match crate::targets::of(ctx) {
        Ok(t) => t.lock(ctx, command, break_lock)?,
        Err(_) => None,
    };
    Ok((local, target))
}

/// Appends one run to the history of the service on its target; a failure to write it is
/// a warning, not the run's failure.
fn record(
    ctx: &Ctx,
    command: &str,
    started: i64,
    elapsed: std::time::Duration,
    ok: bool,
    steps: Vec<state::StepRecord>,
) {
    let config = ctx.config();
    let rec = state::Record {
        command: command.to_string(),
        user: state::user(&ctx.root),
        host: state::hostname(),
        sha: ctx.version().map(|v| v.sha.clone()).unwrap_or_default(),
        // A rollback run records the version it made live; anything else, what HEAD builds.
        version: ctx
            .rolled_back_to()
            .filter(|_| command == "rollback")
            .or_else(|| ctx.version().ok().map(|v| v.to_string()))
            .unwrap_or_default(),
        digest: ctx
            .pushed_image()
            .and_then(|p| p.split_once('@').map(|(_, d)| d.to_string())),
        target: config.deploy_target.to_string(),
        started,
        duration_ms: elapsed.as_millis() as u64,
        outcome: if ok { "ok".into() } else { "failed".into() },
        steps,
        judgements: ctx.judgements(),
    };
    if let Err(e) = state::record(&state::key(config), &rec) {
        ctx.out
            .warn(&format!("the run was not recorded in the history: {e:#}"));
    }
}

fn run_pipeline(
    pipeline: &Pipeline,
    global: GlobalArgs,
    what: What<'_>,
    printer: Printer,
) -> Result<ExitCode> {
    let started = Instant::now();
    let run_started = state::now();
    printer.set_json(global.json);
    let break_lock = global.break_lock;
    let mut ctx = open_for(global, printer, matches!(what, What::Deploy(_)))?;
    let (mut selected, args) = match &what {
        What::One(name, _, _) => (vec![*name], None),
        What::Deploy(args) => (select(pipeline, args)?, Some(args)),
    };
    // `--resume` goes on with the steps the interrupted run chose (its --from, --to,
    // --skip, --no-push, ...), read from the journal only when asked for.
    let resumed = match args {
        Some(a) if a.resume => {
            let version = ctx.version()?.to_string();
            let journal = state::read_journal(&ctx.root)?.ok_or_else(|| {
                hinted(
                    "there is no deploy to resume",
                    "run `deploy` without --resume",
                )
            })?;
            if journal.version != version {
                return Err(hinted(
                    format!(
                        "the journal is of version {}, not {version}: nothing to resume",
                        journal.version
                    ),
                    "run `deploy` without --resume to deploy this version",
                ));
            }
            if !journal.selected.is_empty() {
                let recorded: Vec<&str> = pipeline
                    .names()
                    .into_iter()
                    .filter(|n| journal.selected.iter().any(|s| s == n))
                    .collect();
                if a.has_selection() && recorded != selected {
                    return Err(hinted(
                        format!(
                            "the deploy being resumed runs {}; these flags select {}",
                            recorded.join(", "),
                            selected.join(", ")
                        ),
                        "--resume goes on with the interrupted run's own steps: drop --from, --to, --skip and --no-*, or deploy without --resume",
                    ));
                }
                selected = recorded;
            }
            Some(journal)
        }
        _ => None,
    };
    ctx.opts.steps = selected.iter().map(|s| s.to_string()).collect();
    if let What::One(_, _, to) = &what {
        ctx.opts.rollback_to = to.clone();
    }
    let ctx = ctx;
    let config = ctx.config().clone();
    ctx.register_secrets();
    let dry_run = match &what {
        What::One(_, dry_run, _) => *dry_run,
        What::Deploy(a) => a.dry_run,
    };
    let command = match &what {
        What::One(name, _, _) => name.to_string(),
        What::Deploy(_) => "deploy".to_string(),
    };
    // A run of the pipeline's steps leaves its summary for CI (not a dry run, not a
    // command that only reads, as `status`).
    let reports = !dry_run && (args.is_some() || pipeline.steps().any(|s| s.name() == command));
    // Everything knowable before the first step, for a dry run too: a plan of a run that
    // cannot start would be a lie.
    if let Err(e) = pipeline.check(&ctx, &selected) {
        if reports {
            leave_report(&ctx, &command, &[], Duration::ZERO, Some(&e));
        }
        return Err(e);
    }
    if dry_run {
        let version = ctx.version()?.to_string();
        ctx.out.data(&format!(
            "plan: {command} {} {version} to {} (dry run: nothing is changed)",
            config.name, config.deploy_target
        ));
        let mut n = 0;
        for (step, actions) in pipeline.plan(&ctx, &selected)? {
            ctx.out.data(&format!("{step}:"));
            for a in actions {
                n += 1;
                ctx.out.data(&format!("  {n:>2}. {a}"));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A deploy, or one step that changes a registry or the target (push, stage, promote,
    // rollback, a team's own such step), takes the deploy lock.
    let needs_lock = args.is_some()
        || pipeline
            .runnable()
            .any(|s| s.name() == command && s.changes());
    let _lock = match needs_lock {
        true => Some(deploy_lock(&ctx, &command, break_lock)?),
        false => None,
    };
    // The journal: a deploy records each finished step, so `--resume` can go on from
    // the first one that did not finish.
    let mut journal = None;
    let mut done = Vec::new();
    if args.is_some() {
        let version = ctx.version()?.to_string();
        let j = match resumed {
            Some(j) if j.finished => {
                ctx.out.status(
                    "Nothing",
                    &format!("to resume: the last deploy of {version} finished"),
                );
                return Ok(ExitCode::SUCCESS);
            }
            Some(j) => {
                if let Some(i) = &j.built_image {
                    ctx.set_built_image(i.clone());
                }
                if let Some(p) = &j.pushed {
                    ctx.set_pushed(p.clone());
                }
                done = j.done.clone();
                // Resumed on another machine (a CI job run again): an image built there
                // and not pushed yet is built again here, for the push still to run.
                if done.iter().any(|s| s == "build")
                    && !done.iter().any(|s| s == "push")
                    && selected.contains(&"push")
                    && let Some(image) = &j.built_image
                    && ctx
                        .wait(crate::ops::docker::image_labels(ctx.docker()?, image))?
                        .is_none()
                {
                    ctx.out.status(
                        "Rebuilding",
                        &format!(
                            "{image}: built by the run being resumed, it is not in this engine"
                        ),
                    );
                    done.retain(|s| s != "build");
                }
                ctx.out.status(
                    "Resuming",
                    &format!(
                        "the deploy of {version}; done: {}",
                        if done.is_empty() {
                            "nothing".into()
                        } else {
                            done.join(", ")
                        }
                    ),
                );
                j
            }
            None => state::Journal {
                version: version.clone(),
                started: state::now(),
                selected: selected.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        };
        state::write_journal(&ctx.root, &j)?;
        journal = Some(j);
    }
    ctx.out
        .event(serde_json::json!({"event": "run_started", "command": command, "steps": selected}));
    let result = pipeline.run(&ctx, &selected, &done, |report| {
        if let Some(j) = journal.as_mut() {
            if report.outcome == crate::output::Outcome::Ok {
                j.done.push(report.name.clone());
            }
            j.built_image = ctx.built_image();
            j.pushed = ctx.pushed_image();
            if let Err(e) = state::write_journal(&ctx.root, j) {
                ctx.out.warn(&format!("{e:#}"));
            }
        }
    });
    // What promote or rollback left to finish beside the later steps (the old version's
    // drain and stop, pruning): the run ends when it is done.
    ctx.settle();
    let elapsed = started.elapsed();
    if let Some(mut j) = journal {
        j.finished = result.error.is_none();
        state::write_journal(&ctx.root, &j)?;
    }
    // The history: every run that may change what runs where (a deploy, or push, stage,
    // promote, rollback alone), with this run's own start.
    if needs_lock {
        let steps = result
            .reports
            .iter()
            .map(|r| state::StepRecord {
                name: r.name.clone(),
                outcome: r.outcome.as_str().to_string(),
                duration_ms: r.duration.as_millis() as u64,
            })
            .collect();
        record(
            &ctx,
            &command,
            run_started,
            elapsed,
            result.error.is_none(),
            steps,
        );
    }
    let outcome = if result.error.is_none() {
        "ok"
    } else {
        "failed"
    };
    ctx.out.event(serde_json::json!({"event": "run_finished", "outcome": outcome, "duration_ms": elapsed.as_millis() as u64}));
    ctx.out.summary(&result.reports, elapsed);
    if reports {
        leave_report(
            &ctx,
            &command,
            &result.reports,
            elapsed,
            result.error.as_ref(),
        );
    }
    match result.error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The steps a `deploy` runs, from its flags. Unknown step names are rejected with the
/// list of the pipeline's steps.
pub fn select<'a>(pipeline: &'a Pipeline, a: &DeployArgs) -> Result<Vec<&'a str>> {
    let names = pipeline.names();
    let position = |n: &str| {
        names.iter().position(|s| *s == n).ok_or_else(|| {
            hinted(
                format!("unknown step `{n}`"),
                format!("the steps of this pipeline are: {}", names.join(", ")),
            )
        })
    };
    let from = a.from.as_deref().map(position).transpose()?.unwrap_or(0);
    let to =
        a.to.as_deref()
            .map(position)
            .transpose()?
            .unwrap_or(names.len().saturating_sub(1));
    for s in &a.skip {
        position(s)?;
    }
    if from > to {
        return Err(hinted(
            format!("--from {} comes after --to {}", names[from], names[to]),
            format!("the steps run in this order: {}", names.join(", ")),
        ));
    }
    // --no-push and --no-deploy follow what each step acts on, not its name or place: a
    // team's own local step after push still runs.
    let reach = |n: &str| {
        pipeline
            .runnable()
            .find(|s| s.name() == n)
            .map_or(Reach::Local, |s| s.reach())
    };
    let selected: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, n)| *i >= from && *i <= to && !a.skip.iter().any(|s| s == *n))
        .filter(|(_, n)| !(a.no_test && **n == "test"))
        .filter(|(_, n)| !(a.no_push && reach(n) != Reach::Local))
        .filter(|(_, n)| !(a.no_deploy && reach(n) == Reach::Target))
        .map(|(_, n)| *n)
        .collect();
    if selected.is_empty() {
        return Err(hinted(
            "these flags leave no step to run",
            format!("the steps are: {}", names.join(", ")),
        ));
    }
    Ok(selected)
}

fn service_command(
    pipeline: &Pipeline,
    global: GlobalArgs,
    command: ServiceCommand,
    printer: Printer,
) -> Result<ExitCode> {
    match command {
        ServiceCommand::Deploy(args) => run_pipeline(pipeline, global, What::Deploy(args), printer),
        ServiceCommand::Accept { env } => {
            let step = match env {
                PymEnv::Local => "accept-local",
                PymEnv::Staging => "accept-staging",
                PymEnv::Live => "accept-live",
            };
            if !pipeline.runnable().any(|s| s.name() == step) {
                return Err(hinted(
                    format!("this pipeline has no `{step}` step"),
                    "add it to xtask/src/main.rs",
                ));
            }
            run_pipeline(pipeline, global, What::One(step, false, None), printer)
        }
        ServiceCommand::History => {
            let root = find_root(&global)?;
            let config = Config::load(&root, PymEnv::Local)?;
            let records = state::history(&state::key(&config), |m| printer.warn(m))?;
            if global.json {
                for r in &records {
                    printer.data(&serde_json::to_string(r)?);
                }
                return Ok(ExitCode::SUCCESS);
            }
            // Columns as wide as their widest cell: a long email or version never
            // shifts the rest.
            let mut rows: Vec<[String; 7]> = vec![
                [
                    "STARTED", "COMMAND", "WHO", "VERSION", "OUTCOME", "TIME", "STEPS",
                ]
                .map(str::to_string),
            ];
            for r in &records {
                let steps: Vec<String> = r
                    .steps
                    .iter()
                    .map(|s| {
                        if s.outcome == "ok" {
                            s.name.clone()
                        } else {
                            format!("{}:{}", s.name, s.outcome)
                        }
                    })
                    .collect();
                rows.push([
                    crate::version::fmt_utc(r.started),
                    r.command.clone(),
                    if r.user.contains('@') {
                        format!("{} on {}", r.user, r.host)
                    } else {
                        format!("{}@{}", r.user, r.host)
                    },
                    r.version.clone(),
                    r.outcome.clone(),
                    crate::output::fmt_duration(std::time::Duration::from_millis(r.duration_ms)),
                    steps.join(" "),
                ]);
            }
            let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            let widths: Vec<usize> = (0..6).map(width).collect();
            for r in &rows {
                printer.data(&format!(
                    "{:<w0$} {:<w1$} {:<w2$} {:<w3$} {:<w4$} {:>w5$}  {}",
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3],
                    w4 = widths[4],
                    w5 = widths[5],
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Config { keys: true, .. } => {
            for k in config::KEYS {
                let targets: Vec<&str> = k.targets().iter().map(|t| t.as_str()).collect();
                let scope = if targets.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", targets.join(", "))
                };
                printer.data(&format!(
                    "{:<20} {} (default: {}){scope}",
                    k.name,
                    k.about.trim(),
                    k.default_text()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Config { schema: true, .. } => {
            printer.data(&serde_json::to_string_pretty(&config::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Config { env, .. } => {
            let root = find_root(&global)?;
            let config = Config::load(&root, env)?;
            printer.data(config.to_yaml()?.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Proxy {
            listen,
            state,
            sites,
            listen_tls,
            https_port,
            admin,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            match (sites, listen_tls, state) {
                (Some(sites), Some(tls), _) => rt.block_on(crate::ops::proxy::serve_edge(
                    &listen, &tls, &sites, https_port, &admin,
                ))?,
                (_, _, Some(state)) => {
                    rt.block_on(crate::ops::proxy::serve(&listen, &state, &admin))?
                }
                _ => anyhow::bail!("give --state, or --sites and --listen-tls"),
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::EdgeSite {
            key,
            sites,
            bytes,
            remove,
        } => {
            match (remove, bytes) {
                (true, _) => crate::ops::edge::remove_site(&sites, &key)?,
                (false, Some(n)) => {
                    let conf = serde_json::from_slice(&crate::ops::edge::read_input(n)?)
                        .context("the site's conf is not what this edge reads")?;
                    crate::ops::edge::set_site(&sites, &key, &conf)?;
                }
                (false, None) => anyhow::bail!("give --bytes (the conf on stdin) or --remove"),
            }
            crate::ops::proxy::tell_reload();
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyMaintenance {
            state,
            off,
            retry_after,
            bytes,
        } => {
            let page = String::from_utf8(crate::ops::edge::read_input(bytes)?)
                .context("the maintenance page is not UTF-8")?;
            let m = crate::ops::edge::Maintenance { retry_after, page };
            crate::ops::edge::set_maintenance(&state, (!off).then_some(&m))?;
            crate::ops::proxy::tell_reload();
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::EdgeStatus => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            printer.data(rt.block_on(crate::ops::proxy::admin("/edge"))?.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyRoute {
            upstream,
            addr,
            state,
        } => {
            crate::ops::proxy::set_route(&state, &upstream, addr.as_deref())?;
            crate::ops::proxy::tell_reload();
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyCanary {
            upstream,
            addr,
            share,
            state,
        } => {
            crate::ops::proxy::set_canary(&state, &upstream, addr.as_deref(), share)?;
            crate::ops::proxy::tell_reload();
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyCounts {
            seconds,
            prometheus,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let path = match prometheus {
                true => "/metrics".to_string(),
                false => format!("/window?seconds={seconds}"),
            };
            printer.data(rt.block_on(crate::ops::proxy::admin(&path))?.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyRoutes { state } => {
            printer.data(crate::ops::proxy::show_routes(&state)?.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyDrain {
            upstream,
            timeout_ms,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let left = rt.block_on(crate::ops::proxy::drain(
                &upstream,
                std::time::Duration::from_millis(timeout_ms),
            ))?;
            printer.data(&left.to_string());
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyImage { push } => {
            let ctx = open(global, printer)?;
            let image = crate::targets::proxy_image(&ctx, push.as_deref())?;
            ctx.out.data(&image);
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Maintenance { mode, env } => {
            let break_lock = global.break_lock;
            let ctx = open(global, printer)?;
            let _lock = deploy_lock(&ctx, "maintenance", break_lock)?;
            as_step(&ctx, "maintenance", true, |_| {
                let target = crate::targets::of(&ctx)?;
                Ok(((), target.maintenance(&ctx, env, mode == OnOff::On)?))
            })?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Ci {
            provider: CiProvider::Github,
            force,
            print,
        } => {
            let ctx = open(global, printer)?;
            let config = ctx.config_for(PymEnv::Live)?;
            if print {
                ctx.out.data(&crate::ci::github(&ctx.root, &config)?.text);
            } else {
                let path = crate::ci::write_github(&ctx.root, &config, force)?;
                ctx.out.status("Wrote", &path.display().to_string());
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Cleanup { execute } => {
            let break_lock = global.break_lock;
            let ctx = open(global, printer)?;
            let config = ctx.config().clone();
            let _lock = match execute {
                true => Some(deploy_lock(&ctx, "cleanup", break_lock)?),
                false => None,
            };
            let lines = as_step(&ctx, "cleanup", execute, |_| {
                let target = crate::targets::of(&ctx)?;
                let (one, many) = target.units();
                let lines = target.cleanup(&ctx, execute)?;
                let acted = lines.iter().filter(|l| l.goes()).count();
                let environments = if acted == 1 {
                    format!("1 old {one}")
                } else {
                    format!("{acted} old {many}")
                };
                let note = match (execute, acted) {
                    (true, _) => format!("{environments} of {} cleaned", config.name),
                    (false, 0) => format!("nothing to clean in {}", config.name),
                    (false, _) => format!(
                        "{environments} of {} would go (run with --execute to do it)",
                        config.name
                    ),
                };
                Ok((lines, note))
            })?;
            for l in &lines {
                ctx.out.data(&l.to_string());
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Destroy {
            env: scope,
            yes,
            dry_run,
        } => destroy(global, printer, scope, yes, dry_run),
        ServiceCommand::Version => {
            let ctx = open(global, printer)?;
            let v = ctx.version()?.to_string();
            ctx.out.data(&v);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a command that is one step of its own (cleanup, destroy): shown as a step, with
/// the summary every run ends with, and, when `recorded`, kept in the service's history.
/// `run` returns its result and the step's note.
fn as_step<T>(
    ctx: &Ctx,
    name: &str,
    recorded: bool,
    run: impl FnOnce(&crate::output::StepProgress<'_>) -> Result<(T, String)>,
) -> Result<T> {
    let started = (state::now(), Instant::now());
    let progress = ctx.out.step(name);
    let result = run(&progress);
    let outcome = match result.is_ok() {
        true => crate::output::Outcome::Ok,
        false => crate::output::Outcome::Failed,
    };
    if recorded {
        let step = state::StepRecord {
            name: name.into(),
            outcome: outcome.as_str().to_string(),
            duration_ms: started.1.elapsed().as_millis() as u64,
        };
        record(
            ctx,
            name,
            started.0,
            started.1.elapsed(),
            result.is_ok(),
            vec![step],
        );
    }
    let note = match &result {
        Ok((_, note)) => note.clone(),
        Err(e) => format!("{e}"),
    };
    let duration = progress.finish(&outcome, &note);
    ctx.out.summary(
        &[crate::output::StepReport {
            name: name.into(),
            outcome,
            duration,
            note,
            tail: Vec::new(),
        }],
        started.1.elapsed(),
    );
    result.map(|(t, _)| t)
}

/// `destroy --env SCOPE`: what would go is read from the target and said first; on a
/// terminal the user types the service's name to go on, elsewhere `--yes` is needed;
/// then, under the deploy lock, the target removes it (see `Target::destroy`).
fn destroy(
    global: GlobalArgs,
    printer: Printer,
    scope: crate::targets::Scope,
    yes: bool,
    dry_run: bool,
) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let break_lock = global.break_lock;
    let ctx = open(global, printer)?;
    let config = ctx.config().clone();
    let target = crate::targets::of(&ctx)?;
    let ask = !yes && !dry_run;
    if ask && !std::io::stdin().is_terminal() {
        return Err(hinted(
            format!(
                "destroy removes {scope} of {} from its {} target, and there is no terminal to confirm it on",
                config.name, config.deploy_target
            ),
            "run it on a terminal, or add --yes where nobody can answer (CI); --dry-run shows what would go",
        ));
    }
    target.check(&ctx)?;
    let change = crate::targets::Change::Destroy(scope);
    let plan = target.plan(&ctx, change, None)?;
    if dry_run {
        ctx.out.data(&format!(
            "plan: destroy {scope} of {} on {} (dry run: nothing is changed)",
            config.name, config.deploy_target
        ));
        for (n, a) in plan.iter().enumerate() {
            ctx.out.data(&format!("  {:>2}. {a}", n + 1));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if plan.is_empty() {
        ctx.out.status(
            "Nothing",
            &format!(
                "to remove: {} has no {scope} on {}",
                config.name, config.deploy_target
            ),
        );
        return Ok(ExitCode::SUCCESS);
    }
    if ask {
        ctx.out.status(
            "Destroying",
            &format!("{scope} of {} on {}:", config.name, config.deploy_target),
        );
        for a in &plan {
            eprintln!("    - {a}");
        }
        eprint!("Type the service's name ({}) to go on: ", config.name);
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != config.name {
            return Err(hinted(
                "not confirmed: nothing was removed",
                format!("type `{}` exactly to go on", config.name),
            ));
        }
    }
    let _lock = deploy_lock(&ctx, "destroy", break_lock)?;
    as_step(&ctx, "destroy", true, |p| {
        let note = target.destroy(&ctx, scope, p)?;
        Ok(((), note))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Bare `pymdeploy`: the service's own pipeline if it has one (so the pipeline that runs
/// is the one versioned with the service), else the standard one.
fn bare(pipeline: &Pipeline, global: GlobalArgs, printer: Printer) -> Result<ExitCode> {
    let root = find_root(&global)?;
    if root.join("xtask/Cargo.toml").is_file() && root.join(".cargo/config.toml").is_file() {
        printer.status(
            "Running",
            "cargo xtask deploy (this service's own pipeline)",
        );
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root).args(["xtask", "deploy"]);
        if global.allow_dirty {
            cmd.arg("--allow-dirty");
        }
        if global.force_build {
            cmd.arg("--force-build");
        }
        if global.redeploy {
            cmd.arg("--redeploy");
        }
        if global.json {
            cmd.arg("--json");
        }
        if global.break_lock {
            cmd.arg("--break-lock");
        }
        let status = cmd.status().map_err(|e| {
            hinted(
                format!("cannot run `cargo xtask deploy`: {e}"),
                "install Rust and cargo (https://rustup.rs)",
            )
        })?;
        return Ok(match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
            None => ExitCode::FAILURE,
        });
    }
    run_pipeline(
        pipeline,
        GlobalArgs {
            root: Some(root),
            ..global
        },
        What::Deploy(DeployArgs::default()),
        printer,
    )
}

fn new(args: NewArgs, printer: &Printer) -> Result<ExitCode> {
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    let opts = scaffold::Options {
        name: args.name,
        target: args.target,
        lang: args.lang,
        source: args.source.resolve()?,
    };
    scaffold::new(&dir, &opts, printer)?;
    printer.data(&dir.display().to_string());
    Ok(ExitCode::SUCCESS)
}

fn switch_target(args: TargetArgs, global: &GlobalArgs, printer: &Printer) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let root = find_root(global)?;
    let mut set = Vec::new();
    for pair in &args.set {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(hinted(
                format!("--set {pair}: not KEY=VALUE"),
                "write it like `--set gcp_region=us-central1`",
            ));
        };
        set.push((k.trim().to_string(), v.trim().to_string()));
    }
    let opts = scaffold::SwitchOptions {
        target: args.target,
        set,
        ask: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        commit: args.commit,
    };
    scaffold::switch_target(&root, &opts, printer)?;
    Ok(ExitCode::SUCCESS)
}

fn init(args: InitArgs, printer: &Printer) -> Result<ExitCode> {
    let dir = std::env::current_dir()?;
    let name = match args.name {
        Some(n) => n,
        None => dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("service")
            .to_lowercase()
            .replace('_', "-"),
    };
    let opts = scaffold::InitOptions {
        name,
        target: args.target,
        source: args.source.resolve()?,
        force: args.force,
    };
    scaffold::init(&dir, &opts, printer)?;
    Ok(ExitCode::SUCCESS)
}
