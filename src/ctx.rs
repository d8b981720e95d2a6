//! The run context: one value carrying everything a step may need.
//!
//! Steps receive `&Ctx`: the service root, the options of this run, the printer, the
//! async runtime that drives bollard, and the state earlier steps leave for later ones
//! (the image `build` made). Expensive things (the Docker connection, the version) are
//! made on first use, so `pymdeploy test` never needs a Docker engine.

use std::cell::{Cell, OnceCell, RefCell};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bollard::Docker;

use crate::config::{Config, Configs, PymEnv};
use crate::error::hinted;
use crate::ops;
use crate::output::Printer;
use crate::version::Version;

/// True once the process got SIGINT (Ctrl-C) or SIGTERM.
pub fn interrupted() -> bool {
    ops::interrupted()
}

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Build from a tree with uncommitted changes; the version ends in `-dirty`.
    pub allow_dirty: bool,
    /// Build even when an image for this commit exists.
    pub force_build: bool,
    /// `--redeploy`: promote a version even though a rollback went away from it.
    pub redeploy: bool,
    /// This run is a `deploy` (holding the lock), not one step run by hand: only then does
    /// a failed live acceptance roll back.
    pub deploying: bool,
    /// `rollback --to VERSION`: the version to go back to, even one rolled back from.
    pub rollback_to: Option<String>,
    /// The steps this run runs, in order (set before the checks).
    pub steps: Vec<String>,
}

pub struct Ctx {
    pub root: PathBuf,
    pub opts: Options,
    pub out: Printer,
    rt: tokio::runtime::Runtime,
    interrupt_rx: tokio::sync::watch::Receiver<bool>,
    configs: Configs,
    engine: OnceCell<ops::engine::Endpoint>,
    docker: OnceCell<Docker>,
    version: OnceCell<Version>,
    image: RefCell<Option<String>>,
    pushed: RefCell<Option<String>>,
    /// Where staging and live answered in this run (their acceptance tests' address).
    urls: RefCell<std::collections::BTreeMap<&'static str, String>>,
    rolled_back_to: RefCell<Option<String>>,
    /// The judgements of this run's canary steps and bakes, for its history record.
    judgements: RefCell<Vec<serde_json::Value>>,
    deferred: RefCell<Vec<Deferred>>,
    undoing: Cell<bool>,
    /// How many times the engine was asked for and could not be reached.
    unreachable: Cell<u32>,
}

/// While held (`Ctx::uninterrupted`), waits run to their end even after Ctrl-C: an
/// action that makes or puts back something is finished, never abandoned half-way.
pub struct Uninterrupted<'a>(&'a Cell<bool>, bool);

impl Drop for Uninterrupted<'_> {
    fn drop(&mut self) {
        self.0.set(self.1);
    }
}

/// Work started by `Ctx::defer`: what it is, and its task, which yields lines to report.
type Deferred = (String, tokio::task::JoinHandle<Result<Vec<String>>>);

impl Ctx {
    /// Opens the service at `root` (its `pym-config.yaml` must load for the local env).
    pub fn new(root: &Path, opts: Options, out: Printer) -> Result<Ctx> {
        let mut configs = Configs::load(root)?;
        // Who this service is on a shared target: `service_id`, else the repository's
        // first commit (outside a repository, nothing: what needs it says so).
        if configs.local.service_id.is_none()
            && let Ok(id) = ops::git::root_commit(root)
        {
            for c in [&mut configs.local, &mut configs.staging, &mut configs.live] {
                c.service_id.get_or_insert_with(|| id.clone());
            }
        }
        // In a CI job that may ask for its identity token, a config that names a Google
        // workload identity federation makes it this process's Google credentials.
        let live = &configs.live;
        if let (Some(provider), Some(sa)) = (
            &live.gcp_workload_identity_provider,
            &live.gcp_deploy_service_account,
        ) && ops::oidc::available()
        {
            if let Ok(bearer) = std::env::var(ops::oidc::REQUEST_TOKEN) {
                out.add_secret(&bearer);
            }
            ops::gcp::federate(provider, sa)?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        rt.spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            ops::set_interrupted();
            let _ = tx.send(true);
        });
        Ok(Ctx {
            root: root.to_path_buf(),
            opts,
            out,
            rt,
            interrupt_rx: rx,
            configs,
            engine: OnceCell::new(),
            docker: OnceCell::new(),
            version: OnceCell::new(),
            image: RefCell::new(None),
            pushed: RefCell::new(None),
            urls: RefCell::new(Default::default()),
            rolled_back_to: RefCell::new(None),
            judgements: RefCell::new(Vec::new()),
            deferred: RefCell::new(Vec::new()),
            undoing: Cell::new(false),
            unreachable: Cell::new(0),
        })
    }

    /// Whether this run runs the step `name`.
    pub fn runs(&self, name: &str) -> bool {
        self.opts.steps.iter().any(|s| s == name)
    }

    /// The configuration for the local environment.
    pub fn config(&self) -> &Config {
        &self.configs.local
    }

    /// The configuration for an environment (its overlay applied), loaded with the others
    /// before the first step.
    pub fn config_for(&self, env: PymEnv) -> Result<Config> {
        Ok(self.configs.get(env).clone())
    }

    /// Registers every `env_secrets` value of every environment, and the registry
    /// password, with the printer before the first step, so no step's output (unit tests
    /// included) can show one. Warns about values too short to be masked.
    pub fn register_secrets(&self) {
        let mut names: Vec<&String> = [
            &self.configs.local,
            &self.configs.staging,
            &self.configs.live,
        ]
        .into_iter()
        .flat_map(|c| &c.env_secrets)
        .collect();
        names.sort();
        names.dedup();
        for name in names {
            let Ok(value) = std::env::var(name) else {
                continue;
            };
            if crate::output::short_secret(&value) {
                self.out.warn(&format!(
                    "the value of {name} (env_secrets) has a line shorter than {} characters: it is not masked in output, since masking it would garble ordinary words",
                    crate::output::MIN_SECRET
                ));
            }
            self.out.add_secret(&value);
        }
        if self.config().has_registry() {
            let host = ops::registry::registry_of(&self.config().image_repo());
            if let Ok(Some(c)) = ops::registry::credentials_for(&host) {
                self.out.add_secret(&c.password);
            }
        }
    }

    /// Runs a future that waits on something outside (a health check, a version check, a
    /// cloud operation), giving it up as soon as the run is interrupted: every wait
    /// answers Ctrl-C at once, and the caller's error path undoes what it started.
    pub fn wait<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(self.interruptible(f))
    }

    /// `wait` inside async code: the future, given up with `Interrupted` as soon as the
    /// run is interrupted, so the caller's undo runs (a target's executor awaits its waits
    /// through this).
    pub async fn interruptible<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        if self.undoing.get() {
            return f.await;
        }
        let interrupt = self.on_interrupt();
        tokio::select! {
            r = f => r,
            _ = interrupt => Err(anyhow::Error::new(crate::error::Interrupted)),
        }
    }

    /// Until the guard is dropped, waits are not given up on Ctrl-C: what the executor
    /// runs under it (an action that makes something, an undo) finishes whole, and the
    /// interrupt is answered right after it.
    pub fn uninterrupted(&self) -> Uninterrupted<'_> {
        Uninterrupted(&self.undoing, self.undoing.replace(true))
    }

    /// Starts work that is on no request's path (retiring the version a switch replaced)
    /// beside the steps that follow. It yields lines to report; `settle` waits for it.
    pub fn defer(
        &self,
        what: &str,
        work: impl Future<Output = Result<Vec<String>>> + Send + 'static,
    ) {
        let handle = self.rt.spawn(work);
        self.deferred.borrow_mut().push((what.to_string(), handle));
    }

    /// Waits for the deferred work, reporting what it did. A failure there is a warning:
    /// live serves the version it should; what is left over is for `cleanup`.
    pub fn settle(&self) {
        let pending: Vec<_> = self.deferred.borrow_mut().drain(..).collect();
        for (what, handle) in pending {
            match self.rt.block_on(handle) {
                Ok(Ok(lines)) => {
                    for l in lines {
                        match l.strip_prefix("warning: ") {
                            Some(w) => self.out.warn(w),
                            None => self.out.status("Retired", &l),
                        }
                    }
                }
                Ok(Err(e)) => self.out.warn(&format!(
                    "{what} did not finish: {e:#} (`cargo xtask cleanup` removes what is left)"
                )),
                Err(e) => self.out.warn(&format!("{what} did not finish: {e}")),
            }
        }
    }

    /// Runs a future to completion on the context's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The runtime, for what must still reach the engine when it is dropped (a lock).
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// True once the user pressed Ctrl-C (or the process got SIGTERM).
    pub fn interrupted(&self) -> bool {
        interrupted()
    }

    /// Resolves when the run is interrupted; for `select!` in async steps.
    pub fn on_interrupt(&self) -> impl Future<Output = ()> + use<> {
        let mut rx = self.interrupt_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }

    /// Which Docker engine this run uses (`DOCKER_HOST`, a Docker context, or the local
    /// socket), resolved on first use without connecting.
    pub fn engine(&self) -> Result<&ops::engine::Endpoint> {
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let e = ops::engine::Endpoint::resolve()?;
        Ok(self.engine.get_or_init(|| e))
    }

    /// The Docker engine, connected on first use.
    pub fn docker(&self) -> Result<&Docker> {
        if let Some(d) = self.docker.get() {
            return Ok(d);
        }
        let d = self
            .block_on(ops::engine::connect(self.engine()?))
            .inspect_err(|_| self.unreachable.set(self.unreachable.get() + 1))?;
        Ok(self.docker.get_or_init(|| d))
    }

    /// How many times the engine was asked for and could not be reached: a check that
    /// failed while it grew failed for want of the engine.
    pub fn engine_misses(&self) -> u32 {
        self.unreachable.get()
    }

    /// Where a container that only pymdeploy's own checks reach (accept-local's, a new
    /// live version before the switch) binds, and the host they reach it at. On a local
    /// engine, this machine's loopback, unless `publish_ip` names an address of its own
    /// (staging is published there, so the checks reach it there too: an engine in a
    /// network namespace of its own has a loopback of its own); on a remote one,
    /// `publish_ip` at the engine's host.
    pub fn check_binding(&self, publish_ip: &str) -> Result<(String, String)> {
        let own_address = publish_ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified());
        match self.engine()?.remote_host() {
            None if own_address => Ok((publish_ip.into(), publish_ip.into())),
            None => Ok(("127.0.0.1".into(), "127.0.0.1".into())),
            Some(_) => self.published(publish_ip),
        }
    }

    /// Where a container published with `publish_ip` binds on the engine, and the host
    /// this machine reaches it at. On this machine's engine, a wildcard is reached at
    /// 127.0.0.1; on a remote one, at the engine's host, and a loopback `publish_ip` is
    /// an error: nothing here could reach it.
    pub fn published(&self, publish_ip: &str) -> Result<(String, String)> {
        let wildcard = publish_ip == "0.0.0.0" || publish_ip == "::";
        let Some(remote) = self.engine()?.remote_host() else {
            return Ok((
                publish_ip.to_string(),
                if wildcard {
                    "127.0.0.1".into()
                } else {
                    publish_ip.to_string()
                },
            ));
        };
        if publish_ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        {
            return Err(hinted(
                format!(
                    "publish_ip is {publish_ip}, the loopback of the engine's host {remote}: nothing on this machine could reach staging, live or the checks"
                ),
                "set `publish_ip: 0.0.0.0` (or the server's own address) in pym-config.yaml; a firewall on the server decides who else reaches those ports",
            ));
        }
        Ok((
            publish_ip.to_string(),
            if wildcard {
                remote
            } else {
                publish_ip.to_string()
            },
        ))
    }

    /// The version of HEAD. A dirty tree is an error unless `--allow-dirty` was given.
    pub fn version(&self) -> Result<&Version> {
        if let Some(v) = self.version.get() {
            return Ok(v);
        }
        let head = ops::git::head(&self.root)?;
        if head.dirty && !self.opts.allow_dirty {
            let files = ops::git::changed_files(&self.root).unwrap_or_default();
            let shown: Vec<_> = files.iter().take(5).map(String::as_str).collect();
            let more = if files.len() > 5 {
                format!(" and {} more", files.len() - 5)
            } else {
                String::new()
            };
            return Err(hinted(
                format!(
                    "the working tree of {} has uncommitted changes: {}{more}",
                    self.root.display(),
                    shown.join(", ")
                ),
                "commit them, or pass --allow-dirty to build a version marked `-dirty`",
            ));
        }
        Ok(self.version.get_or_init(|| {
            Version::of_commit(head.time, head.commit_count, &head.sha, head.dirty)
        }))
    }

    /// The image tag for this version: `<docker_repo>/<name>:<version>`.
    pub fn image_tag(&self) -> Result<String> {
        Ok(format!(
            "{}:{}",
            self.config().image_repo(),
            self.version()?
        ))
    }

    /// The image to run or push: the one `build` made in this run, else this version's
    /// tag; an error with a hint when the engine does not have it.
    pub fn local_image(&self) -> Result<String> {
        let image = match self.built_image() {
            Some(image) => image,
            None => self.image_tag()?,
        };
        if self
            .block_on(ops::docker::image_labels(self.docker()?, &image))?
            .is_none()
        {
            return Err(hinted(
                format!("no image {image} in the local engine"),
                "build it first: `cargo xtask build`",
            ));
        }
        Ok(image)
    }

    /// The image the build step made or reused in this run, if it ran.
    pub fn built_image(&self) -> Option<String> {
        self.image.borrow().clone()
    }

    pub fn set_built_image(&self, tag: String) {
        *self.image.borrow_mut() = Some(tag);
    }

    /// The image reference by digest (`repo@sha256:…`) the push step pushed in this run.
    pub fn pushed_image(&self) -> Option<String> {
        self.pushed.borrow().clone()
    }

    pub fn set_pushed(&self, reference: String) {
        *self.pushed.borrow_mut() = Some(reference);
    }

    /// Records where `env` answered in this run, for the run's summary.
    pub fn note_url(&self, env: PymEnv, url: String) {
        self.urls.borrow_mut().insert(env.as_str(), url);
    }

    /// Where `env` answered in this run, if a step went there.
    pub fn url(&self, env: PymEnv) -> Option<String> {
        self.urls.borrow().get(env.as_str()).cloned()
    }

    /// The version a rollback in this run made live (the history records it, not HEAD's).
    pub fn rolled_back_to(&self) -> Option<String> {
        self.rolled_back_to.borrow().clone()
    }

    /// Keeps a judgement of a canary step or a bake for the run's history record.
    pub fn add_judgement(&self, judgement: serde_json::Value) {
        self.judgements.borrow_mut().push(judgement);
    }

    pub fn judgements(&self) -> Vec<serde_json::Value> {
        self.judgements.borrow().clone()
    }

    pub fn set_rolled_back_to(&self, version: String) {
        *self.rolled_back_to.borrow_mut() = Some(version);
    }
}

/// A context for unit tests: a docker service `s` in a directory of its own under the
/// temporary directory (`tag`, the process and the thread make it unique).
#[cfg(test)]
pub(crate) fn scratch(tag: &str) -> Ctx {
    let dir = std::env::temp_dir().join(format!(
        "pym-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(crate::config::CONFIG_FILE),
        "name: s\ndeploy_target: docker\n",
    )
    .unwrap();
    Ctx::new(&dir, Default::default(), crate::output::Printer::from_env()).unwrap()
}
