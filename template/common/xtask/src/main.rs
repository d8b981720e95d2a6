//! This service's deploy pipeline: `cargo xtask deploy`, or one step at a time
//! (`cargo xtask test`, `cargo xtask build`, … `cargo xtask promote`).
//!
//! The pipeline is plain code, versioned with the service; the `pymdeploy` binary of the
//! version Cargo.toml pins runs it (found on this machine, or installed once). Reorder
//! the steps, remove one, or add your own; each step becomes a subcommand. For example,
//! a lint before the tests:
//!
//! ```ignore
//! .step_before("test", pymdeploy_xtask::command("lint", "Run ruff", "ruff check ."))
//! ```

use pymdeploy_xtask::Pipeline;
use pymdeploy_xtask::PymEnv::{Live, Staging};
use pymdeploy_xtask::steps::*;

fn main() -> std::process::ExitCode {
    Pipeline::new()
        .step(Test) // unit tests: `test_command`
        .step(Build) // the docker image, tagged with the version
        .step(AcceptLocal) // the image, run locally, against `accept_command`
        .step(Push) // the image, to the registry `docker_repo` names
        .step(Stage) // the pushed image, as the staging environment of `deploy_target`
        .step(Accept(Staging)) // `accept-staging`
        .step(Promote) // staging's version made live, blue/green, verified
        .step(Accept(Live)) // `accept-live`; rolls back on failure
        .command(Rollback) // `cargo xtask rollback`: the previous live version
        .command(Status) // `cargo xtask status`: what runs where
        .run()
}
