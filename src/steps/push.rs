//! `push`: the built image to the registry `docker_repo` names, with the credentials
//! Docker users already have (see `ops::registry`).

use anyhow::Result;

use crate::config::TargetKind;
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::ops;
use crate::output::StepProgress;
use crate::pipeline::{Reach, Step};

pub struct Push;

impl Step for Push {
    fn reach(&self) -> Reach {
        Reach::Registry
    }
    fn changes(&self) -> bool {
        true
    }
    fn name(&self) -> &str {
        "push"
    }

    fn about(&self) -> &str {
        "Push the image to the registry `docker_repo` names"
    }

    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        if !ctx.config().has_registry() {
            return Ok(vec![NO_REGISTRY.to_string()]);
        }
        let tag = ctx.image_tag()?;
        let host = ops::registry::registry_of(&tag);
        let source = match ops::registry::credentials_for(&host)? {
            Some(c) => format!("the credentials of `{}` from {}", c.username, c.source),
            None => "no credentials (none found)".to_string(),
        };
        Ok(vec![format!("push {tag} to {host} with {source}")])
    }

    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        if !ctx.config().has_registry() && ctx.config().deploy_target == TargetKind::Docker {
            return Ok(NO_REGISTRY.to_string());
        }
        if !ctx.config().has_registry() {
            return Err(hinted(
                "there is no registry to push to: `docker_repo` is not set",
                "set `docker_repo: <registry>/<namespace>` in pym-config.yaml",
            ));
        }
        let image = ctx.local_image()?;
        let docker = ctx.docker()?;
        let host = ops::registry::registry_of(&image);
        let creds = ops::registry::credentials_for(&host)?;
        if let Some(c) = &creds {
            ctx.out.add_secret(&c.password);
        }
        let pushed = ctx.wait(ops::docker::push(docker, &image, creds.as_ref(), progress))?;
        let reference = format!(
            "{}@{}",
            image.rsplit_once(':').map(|(n, _)| n).unwrap_or(&image),
            pushed.digest
        );
        ctx.set_pushed(reference.clone());
        let layers = |n: usize| {
            if n == 1 {
                "1 layer".to_string()
            } else {
                format!("{n} layers")
            }
        };
        Ok(if pushed.layers_pushed == 0 {
            format!(
                "unchanged: all {} already in {host} ({})",
                layers(pushed.layers_existing),
                short(&pushed.digest)
            )
        } else {
            format!(
                "{} pushed, {} already there ({})",
                layers(pushed.layers_pushed),
                pushed.layers_existing,
                short(&pushed.digest)
            )
        })
    }
}

/// Without `docker_repo`, the docker target runs the image from the engine that built it
/// (the local one, or the one `DOCKER_HOST` names): there is nothing to push.
const NO_REGISTRY: &str = "nothing to push: no `docker_repo`, and the docker target runs the image from the engine that built it";

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
