//! This service's deploy pipeline: `cargo xtask deploy`, or one step at a time
//! (`cargo xtask test`, `cargo xtask build`, `cargo xtask accept-local`).
//!
//! The pipeline is plain code, versioned with the service. Reorder the steps, remove one,
//! or add your own; each step becomes a subcommand. For example, a lint before the tests:
//!
//! ```ignore
//! .step_before("test", pymdeploy::step("lint", "Run clippy", |ctx, progress| {
//!     let sh = pymdeploy::xshell::Shell::new()?;
//!     let cmd = pymdeploy::xshell::cmd!(sh, "cargo clippy -- -D warnings");
//!     pymdeploy::ops::cmd::stream(cmd, &ctx.root, progress, false)?;
//!     Ok("clean".into())
//! }))
//! ```

use pymdeploy::Pipeline;
use pymdeploy::steps::{accept::AcceptLocal, build::Build, push::Push, test::Test};

fn main() -> std::process::ExitCode {
    let pipeline = Pipeline::new()
        .step(Test) // unit tests: `test_command`
        .step(Build) // the docker image, tagged with the version
        .step(AcceptLocal) // the image, run locally, against `accept_command`
        .command(Push); // `cargo xtask push`: the image to `docker_repo`
    pymdeploy::xtask(pipeline)
}
