//! The pipeline's steps, one module each. A step decides what to do and calls `ops/` to
//! do it; it never prints directly, only through its `StepProgress`.

pub mod accept;
pub mod build;
pub mod deploy;
pub mod push;
pub mod test;

use anyhow::{Context, Result, bail};

use crate::config::PymEnv;
use crate::pipeline::{Pipeline, Reach, ShellStep, Step};

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

/// One step of a pipeline a `pymdeploy-xtask` crate sends (`Pipeline::to_json` there): a
/// standard step by name, or a team's shell command.
#[derive(serde::Deserialize)]
struct SpecStep {
    name: String,
    command: bool,
    about: Option<String>,
    run: Option<String>,
    reach: Option<String>,
    #[serde(default)]
    changes: bool,
}

impl Pipeline {
    /// The pipeline a service's xtask declared with the `pymdeploy-xtask` crate, which runs
    /// this binary with it.
    pub fn from_spec(json: &str) -> Result<Pipeline> {
        let spec: Vec<SpecStep> = serde_json::from_str(json)
            .context("the pipeline the xtask sent is not one this pymdeploy reads")?;
        let mut p = Pipeline::new();
        for s in spec {
            let step: Box<dyn Step> = match (s.run, s.name.as_str()) {
                (Some(run), _) => {
                    let reach = match s.reach.as_deref() {
                        None | Some("local") => Reach::Local,
                        Some("registry") => Reach::Registry,
                        Some("target") => Reach::Target,
                        Some(other) => bail!("step {}: no reach `{other}`", s.name),
                    };
                    Box::new(ShellStep {
                        about: s.about.unwrap_or_else(|| format!("Run `{run}`")),
                        name: s.name,
                        run,
                        reach,
                        changes: s.changes,
                    })
                }
                (None, "test") => Box::new(test::Test),
                (None, "build") => Box::new(build::Build),
                (None, "accept-local") => Box::new(accept::AcceptLocal),
                (None, "push") => Box::new(push::Push),
                (None, "stage") => Box::new(deploy::Stage),
                (None, "accept-staging") => Box::new(deploy::Accept(PymEnv::Staging)),
                (None, "promote") => Box::new(deploy::Promote),
                (None, "accept-live") => Box::new(deploy::Accept(PymEnv::Live)),
                (None, "rollback") => Box::new(deploy::Rollback),
                (None, "status") => Box::new(deploy::Status),
                (None, other) => {
                    bail!("the xtask names a step `{other}` that this pymdeploy does not have")
                }
            };
            p = match s.command {
                true => p.command_boxed(step),
                false => p.step_boxed(step),
            };
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_from_its_spec() {
        let p = Pipeline::from_spec(
            r#"[{"name":"test","command":false},{"name":"lint","command":false,"about":"Lint","run":"make lint","reach":"local","changes":false},{"name":"build","command":false},{"name":"status","command":true}]"#,
        )
        .unwrap();
        assert_eq!(p.names(), ["test", "lint", "build"]);
        let all: Vec<&str> = p.runnable().map(|s| s.name()).collect();
        assert_eq!(all, ["test", "lint", "build", "status"]);
        let err = Pipeline::from_spec(r#"[{"name":"deploy-it","command":false}]"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("`deploy-it`"), "{err}");
    }
}
