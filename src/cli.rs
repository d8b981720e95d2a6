//! The command line, shared by the `pymdeploy` binary and every service's xtask.
//!
//! The fixed commands are declared with clap's derive; the pipeline's steps are added as
//! subcommands at run time, so a team's own steps in `xtask/src/main.rs` get their own
//! subcommand and `--help` line like the standard ones.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{self, Config, PymEnv, TargetKind};
use crate::ctx::{Ctx, Options};
use crate::error::{Interrupted, hinted};
use crate::output::Printer;
use crate::pipeline::Pipeline;
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
}

/// Commands every service's xtask has.
#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Run the whole pipeline, stopping at the first failure
    Deploy,
    /// Print the merged configuration for an environment (secrets masked)
    Config {
        /// The environment whose overlay is applied
        #[arg(long, value_enum, default_value_t = PymEnv::Local)]
        env: PymEnv,
        /// List every key pym-config.yaml accepts instead
        #[arg(long)]
        keys: bool,
    },
    /// Print the version the current commit builds as
    Version,
    /// The live proxy of the docker target (runs inside its container)
    #[command(name = "__proxy", hide = true)]
    Proxy {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        state: PathBuf,
    },
    /// Points the live proxy at a new upstream (run inside its container)
    #[command(name = "__proxy-route", hide = true)]
    ProxyRoute {
        upstream: String,
        #[arg(long)]
        state: PathBuf,
    },
}

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "This service's deploy pipeline", arg_required_else_help = true)]
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
    /// The directory to create [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    /// Depend on a pymdeploy source checkout instead of the published crate (for
    /// developing pymdeploy itself)
    #[arg(long, value_name = "DIR", env = "PYMDEPLOY_PATH")]
    pymdeploy_path: Option<PathBuf>,
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
    /// Depend on a pymdeploy source checkout instead of the published crate
    #[arg(long, value_name = "DIR", env = "PYMDEPLOY_PATH")]
    pymdeploy_path: Option<PathBuf>,
}

/// The entry point of a service's xtask: `fn main() -> ExitCode { pymdeploy::xtask(pipeline) }`.
pub fn xtask(pipeline: Pipeline) -> ExitCode {
    let cmd = with_steps(XtaskCli::command(), &pipeline);
    let matches = cmd.get_matches();
    let printer = Printer::from_env();
    let result = match step_subcommand(&matches, &pipeline) {
        Some((name, global)) => run_pipeline(&pipeline, global, Some(name), printer),
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

/// The entry point of the `pymdeploy` binary.
pub fn pymdeploy() -> ExitCode {
    let pipeline = Pipeline::standard();
    let cmd = with_steps(PymCli::command(), &pipeline);
    let matches = cmd.get_matches();
    let printer = Printer::from_env();
    let result = match step_subcommand(&matches, &pipeline) {
        Some((name, global)) => run_pipeline(&pipeline, global, Some(name), printer),
        None => match PymCli::from_arg_matches(&matches) {
            Ok(cli) => match cli.command {
                Some(PymCommand::New(a)) => new(a, &printer),
                Some(PymCommand::Init(a)) => init(a, &printer),
                Some(PymCommand::Service(c)) => service_command(&pipeline, cli.global, c, printer),
                None => bare(&pipeline, cli.global, printer),
            },
            Err(e) => e.exit(),
        },
    };
    finish(result)
}

/// The clap command for `pymdeploy` (for help snapshots and `debug_assert`).
pub fn pymdeploy_command() -> clap::Command {
    with_steps(PymCli::command(), &Pipeline::standard())
}

/// The clap command for a service's xtask with the given pipeline.
pub fn xtask_command(pipeline: &Pipeline) -> clap::Command {
    with_steps(XtaskCli::command(), pipeline)
}

fn with_steps(mut cmd: clap::Command, pipeline: &Pipeline) -> clap::Command {
    for s in pipeline.runnable() {
        cmd = cmd.subcommand(clap::Command::new(s.name().to_string()).about(s.about().to_string()));
    }
    cmd
}

fn step_subcommand<'a>(matches: &'a ArgMatches, pipeline: &Pipeline) -> Option<(&'a str, GlobalArgs)> {
    let (name, sub) = matches.subcommand()?;
    if !pipeline.runnable().any(|s| s.name() == name) {
        return None;
    }
    let global = GlobalArgs::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
    Some((name, global))
}

fn finish(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            let interrupted = e.chain().any(|c| c.downcast_ref::<Interrupted>().is_some());
            Printer::from_env().error(&e);
            if interrupted { ExitCode::from(130) } else { ExitCode::FAILURE }
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
                    format!("no {} in {} or any directory above it", config::CONFIG_FILE, cwd.display()),
                    "run this in a service root, or create one with `pymdeploy new NAME` or `pymdeploy init`",
                ));
            }
        }
    }
}

fn open(global: GlobalArgs, printer: Printer) -> Result<Ctx> {
    let root = find_root(&global)?;
    let opts = Options { allow_dirty: global.allow_dirty, force_build: global.force_build };
    Ctx::new(&root, opts, printer)
}

fn run_pipeline(pipeline: &Pipeline, global: GlobalArgs, only: Option<&str>, printer: Printer) -> Result<ExitCode> {
    let started = Instant::now();
    let ctx = open(global, printer)?;
    let only_list = only.map(|n| vec![n]);
    let result = pipeline.run(&ctx, only_list.as_deref());
    ctx.out.summary(&result.reports, started.elapsed());
    match result.error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn service_command(pipeline: &Pipeline, global: GlobalArgs, command: ServiceCommand, printer: Printer) -> Result<ExitCode> {
    match command {
        ServiceCommand::Deploy => run_pipeline(pipeline, global, None, printer),
        ServiceCommand::Config { keys: true, .. } => {
            for (key, about) in config::KEYS {
                printer.data(&format!("{key:<18} {}", about.trim()));
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Config { env, keys: false } => {
            let root = find_root(&global)?;
            let config = Config::load(&root, env)?;
            printer.data(config.to_yaml()?.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Proxy { listen, state } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(crate::ops::proxy::serve(&listen, &state))?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::ProxyRoute { upstream, state } => {
            crate::ops::proxy::set_route(&state, &upstream)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Version => {
            let ctx = open(global, printer)?;
            let v = ctx.version()?.to_string();
            ctx.out.data(&v);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Bare `pymdeploy`: the service's own pipeline if it has one (so the pipeline that runs
/// is the one versioned with the service), else the standard one.
fn bare(pipeline: &Pipeline, global: GlobalArgs, printer: Printer) -> Result<ExitCode> {
    let root = find_root(&global)?;
    if root.join("xtask/Cargo.toml").is_file() && root.join(".cargo/config.toml").is_file() {
        printer.status("Running", "cargo xtask deploy (this service's own pipeline)");
        let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root).args(["xtask", "deploy"]);
        if global.allow_dirty {
            cmd.arg("--allow-dirty");
        }
        if global.force_build {
            cmd.arg("--force-build");
        }
        let status = cmd.status().map_err(|e| hinted(format!("cannot run `cargo xtask deploy`: {e}"), "install Rust and cargo (https://rustup.rs)"))?;
        return Ok(match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
            None => ExitCode::FAILURE,
        });
    }
    run_pipeline(pipeline, GlobalArgs { root: Some(root), ..global }, None, printer)
}

fn new(args: NewArgs, printer: &Printer) -> Result<ExitCode> {
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    let opts = scaffold::Options { name: args.name, target: args.target, pymdeploy_path: args.pymdeploy_path };
    scaffold::new(&dir, &opts, printer)?;
    printer.data(&dir.display().to_string());
    Ok(ExitCode::SUCCESS)
}

fn init(args: InitArgs, printer: &Printer) -> Result<ExitCode> {
    let dir = std::env::current_dir()?;
    let name = match args.name {
        Some(n) => n,
        None => dir.file_name().and_then(|n| n.to_str()).unwrap_or("service").to_lowercase().replace('_', "-"),
    };
    let opts = scaffold::Options { name, target: args.target, pymdeploy_path: args.pymdeploy_path };
    scaffold::init(&dir, &opts, args.force, printer)?;
    Ok(ExitCode::SUCCESS)
}
