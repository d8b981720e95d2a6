//! The pipeline's steps, one module each. A step decides what to do and calls `ops/` to
//! do it; it never prints directly, only through its `StepProgress`.

pub mod accept;
pub mod build;
pub mod deploy;
pub mod push;
pub mod test;

use crate::config::PymEnv;
use crate::pipeline::Pipeline;

impl Pipeline {
    /// test → build → accept-local → push → stage → accept-staging → promote →
    /// accept-live, with the commands `rollback` and `status`. (Defined beside the steps
    /// it is made of, so the pipeline's own module knows no step.)
    pub fn standard() -> Pipeline {
        use deploy::{Accept, Promote, Rollback, Stage, Status};
        Pipeline::new()
            .step(test::Test)
            .step(build::Build)
            .step(accept::AcceptLocal)
            .step(push::Push)
            .step(Stage)
            .step(Accept(PymEnv::Staging))
            .step(Promote)
            .step(Accept(PymEnv::Live))
            .command(Rollback)
            .command(Status)
    }
}
