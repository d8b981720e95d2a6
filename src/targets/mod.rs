//! Deploy targets: where `stage`, `promote` and `rollback` put the service. One folder
//! per target, each a `Target`, listed once in `targets!` below. What they
//! share sits beside them: `plan` (the one executor of a target's typed actions),
//! `history` (the one deploy record and the decisions taken from it), and the checks
//! below.

pub mod history;
pub mod plan;
pub mod rollout;

use std::time::Duration;

use anyhow::{Result, bail};

use crate::config::{Config, PymEnv, TargetKind};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;
use crate::version::Served;

/// Where an environment answers: host and port for the acceptance tests.
pub struct Address {
    pub host: String,
    pub port: u16,
    /// Reached over HTTPS (Cloud Run's URLs): the tests get `PYM_SERVER_URL=https://...`.
    pub tls: bool,
    /// A bearer token callers must send (a private Cloud Run service's identity token):
    /// the tests get it as `PYM_SERVER_TOKEN`.
    pub token: Option<String>,
    /// What must stay alive while the tests run (a port-forward), dropped after them.
    pub hold: Option<Guard>,
}

impl Address {
    /// `http(s)://host[:port]`, the port left out where it is the scheme's own.
    pub fn url(&self) -> String {
        match (self.tls, self.port) {
            (true, 443) => format!("https://{}", self.host),
            (false, 80) => format!("http://{}", self.host),
            (true, p) => format!("https://{}:{p}", self.host),
            (false, p) => format!("http://{}:{p}", self.host),
        }
    }
}

/// How often and how patiently `verify_version` asks.
pub(crate) struct Poll {
    /// The pause between two questions.
    pub every: Duration,
    /// How long one question may take.
    pub ask: Duration,
}

/// What is wrong with an answer of `path` (`version_path`), if it does not name
/// `version` (and, with `env`, that `PYM_ENV`); `None` when it does.
pub(crate) fn version_mismatch(
    path: &str,
    status: u16,
    body: &str,
    version: &str,
    env: Option<PymEnv>,
) -> Option<String> {
    if !(200..300).contains(&status) {
        return Some(format!("{path} answered {status}"));
    }
    match Served::parse(body) {
        Some(s) if s.version == version && env.is_none_or(|e| s.pym_env == e.as_str()) => None,
        Some(s) if env.is_some() => Some(format!(
            "it serves {} with PYM_ENV={}",
            s.version, s.pym_env
        )),
        Some(s) => Some(format!("it serves {}", s.version)),
        None => Some(format!(
            "{path} answered no JSON with `version` and `pym_env`"
        )),
    }
}

/// Asks `version_path` on `host:port` until it names `version` (and, with `env`, that
/// `PYM_ENV`), for at most `within`; the error says what it served last. With
/// `verify_version: false` the service has no such path and health alone decides.
pub(crate) async fn verify_version(
    config: &Config,
    host: &str,
    (port, vhost): (u16, Option<&str>),
    version: &str,
    env: Option<PymEnv>,
    within: Duration,
    poll: Poll,
) -> Result<()> {
    if !config.verify_version {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + within;
    let env_note = env
        .map(|e| format!(" with PYM_ENV={e}"))
        .unwrap_or_default();
    let path = &config.version_path;
    loop {
        let last = match crate::ops::http::get_as(host, port, vhost, path, poll.ask).await {
            Ok((status, body)) => match version_mismatch(path, status, &body, version, env) {
                None => return Ok(()),
                Some(why) => why,
            },
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{}:{port} does not serve version {version}{env_note}: {last}",
                vhost.unwrap_or(host)
            );
        }
        tokio::time::sleep(poll.every).await;
    }
}

/// What one question of `serves_contract` got: the status and body, or why none came
/// (asked again); an `Err` of the outer `Result` ends the wait at once.
#[cfg(any(feature = "gcp-cloud-run", feature = "gke"))]
pub(crate) type Answer = Result<std::result::Result<(u16, String), String>>;

/// Asks `what` for the service contract until it holds: `health_path` answers healthy,
/// and (unless `verify_version: false`) `version_path` names `version` in `env`; for at
/// most `health_timeout`, every 500 ms. `get` asks one path, however the target reaches
/// the service (HTTPS with a token, the apiserver's proxy, plain HTTP).
#[cfg(any(feature = "gcp-cloud-run", feature = "gke"))]
pub(crate) async fn serves_contract<F, Fut>(
    config: &Config,
    what: &str,
    version: &str,
    env: PymEnv,
    mut get: F,
) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Answer>,
{
    let c = config;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(c.health_timeout.get());
    loop {
        let last = match get(c.health_path.clone()).await? {
            Ok((status, _)) if !c.is_healthy_status(status) => {
                format!("{} answered {status}", c.health_path)
            }
            Ok(_) if !c.verify_version => return Ok(()),
            Ok(_) => match get(c.version_path.clone()).await? {
                Ok((status, body)) => {
                    match version_mismatch(&c.version_path, status, &body, version, Some(env)) {
                        None => return Ok(()),
                        Some(why) => why,
                    }
                }
                Err(why) => why,
            },
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} does not serve version {version} with PYM_ENV={env}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Host and port of a URL (`https://h` → 443, `http://h` → 80).
#[cfg(any(feature = "aws-beanstalk", feature = "gcp-cloud-run", feature = "gke"))]
pub(crate) fn url_host(url: &str) -> (String, u16) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => {
            (h.to_ascii_lowercase(), p.parse().unwrap_or(default))
        }
        _ => (authority.to_ascii_lowercase(), default),
    }
}

/// The image to deploy, by digest, without a Docker engine where something else knows
/// it: what `push` pushed in this run, else what a push of this version recorded in
/// this machine's history; only then the engine (`docker::reference`), which has the
/// image it built.
pub fn image_reference(ctx: &Ctx) -> Result<String> {
    if let Some(r) = ctx.pushed_image() {
        return Ok(r);
    }
    let config = ctx.config();
    if config.has_registry() {
        let version = ctx.version()?.to_string();
        if let Some(digest) = crate::ops::state::pushed_digest(config, &version)? {
            return Ok(format!("{}@{digest}", config.image_repo()));
        }
    }
    docker::reference(ctx, ctx.docker()?)
}

/// Whether this process runs a service's own pipeline (`cli::xtask`: the binary run by
/// `pymdeploy-xtask`, or an xtask that links the library).
pub static RUN_AS_XTASK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A cloud target whose feature this build lacks (the docker target is always here).
/// In a service's own pipeline (`cargo xtask`), the fix is its xtask's dependency; from
/// the `pymdeploy` binary, that pipeline or a build with the feature.
fn unsupported(kind: TargetKind) -> anyhow::Error {
    let hint = match RUN_AS_XTASK.load(std::sync::atomic::Ordering::Relaxed) {
        true => format!(
            "run `pymdeploy target {kind}`: it turns on the feature in xtask/Cargo.toml (`pymdeploy-xtask = {{ ..., features = [\"{kind}\"] }}`) and sets what the target needs"
        ),
        false => format!(
            "run the service's own pipeline, `cargo xtask <command>`, after `pymdeploy target {kind}` turned the feature on in its xtask; or install pymdeploy with `--features {kind}`"
        ),
    };
    hinted(
        format!(
            "this pymdeploy was built without the {kind} feature, which deploy_target: {kind} needs"
        ),
        hint,
    )
}

/// The changing commands of a target, for their `--dry-run` plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Stage,
    Promote,
    Rollback,
    /// `destroy`: what pymdeploy made for these environments goes.
    Destroy(Scope),
}

impl Change {
    /// The environment the command changes (the config `destroy` reads: live's, unless
    /// only staging goes).
    pub fn env(self) -> PymEnv {
        match self {
            Change::Stage | Change::Destroy(Scope::Staging) => PymEnv::Staging,
            Change::Promote | Change::Rollback | Change::Destroy(_) => PymEnv::Live,
        }
    }
}

/// What `destroy --env` takes off the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    Staging,
    Live,
    /// Staging and live.
    All,
}

impl Scope {
    pub fn staging(self) -> bool {
        matches!(self, Scope::Staging | Scope::All)
    }

    pub fn live(self) -> bool {
        matches!(self, Scope::Live | Scope::All)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Staging => "staging",
            Scope::Live => "live",
            Scope::All => "staging and live",
        })
    }
}

/// What staging runs: the version and the image, by digest, that a promote makes live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub version: String,
    /// The reference to run it by (`repo@sha256:...`, or the engine's image ID).
    pub image: String,
    /// The image's digest (`sha256:...`): what staging acceptance is recorded against.
    pub digest: String,
}

/// What a target keeps of its deploys on its own side, for the invariants that
/// `steps::deploy` checks once for every target: promote makes live only what staging
/// runs, and only once it passed staging acceptance; rollback never goes back to a
/// version it left. A target that has it returns it from `Target::ledger`.
pub trait Ledger {
    /// What staging runs now, if anything.
    fn staged(&self, ctx: &Ctx) -> Result<Option<Staged>>;
    /// The deploy record.
    fn history(&self, ctx: &Ctx) -> Result<history::History>;
    /// Adds one entry to the deploy record.
    fn record(
        &self,
        ctx: &Ctx,
        event: history::Event,
        version: &str,
        digest: Option<&str>,
    ) -> Result<()>;
}

/// A deploy target: where `stage`, `promote` and `rollback` put the service, and what
/// `status`, `cleanup` and the acceptance tests read from it. One implementation per
/// file; `of` is the only place that knows which exist in this build.
pub trait Target {
    /// What this target runs versions as, one and many ("container", "containers").
    fn units(&self) -> (&'static str, &'static str);
    /// Whether the target can be reached and the config works for it: asked before the
    /// first step of any run that reaches the target.
    fn check(&self, ctx: &Ctx) -> Result<()>;
    /// Whether `env`'s address is free for it or already its own, for a target that
    /// publishes one on a host others share (asked by the step that would publish it).
    fn check_address(&self, _ctx: &Ctx, _env: PymEnv) -> Result<()> {
        Ok(())
    }
    /// Takes the target's own lock, for a target that more than one machine deploys to
    /// and that has no exclusion of its own; held until dropped.
    fn lock(&self, _ctx: &Ctx, _command: &str, _break_lock: bool) -> Result<Option<Guard>> {
        Ok(None)
    }
    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String>;
    /// Makes live what staging runs: `staged`, read by `steps::deploy` through the
    /// target's `Ledger` (`None` from a target without one, which finds it itself).
    fn promote(
        &self,
        ctx: &Ctx,
        staged: Option<&Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String>;
    /// Goes back to a previous version: `to` when named (`rollback --to`; only a target
    /// with a `Ledger` takes one), else the one `history::rollback_to` chooses.
    fn rollback(&self, ctx: &Ctx, to: Option<&str>, progress: &StepProgress<'_>) -> Result<String>;
    /// Where an environment answers, for its acceptance tests.
    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address>;
    /// The actions of a changing command on this target, for `--dry-run`: `staged` as
    /// for `promote`.
    fn plan(&self, ctx: &Ctx, change: Change, staged: Option<&Staged>) -> Result<Vec<String>>;
    /// Where the judgement of a new version comes from, for a promote that judges one
    /// (`rollout`: a canary's steps, a bake); refused before the first step where the
    /// target cannot split live's traffic or count a version's requests.
    fn judged_by(&self, ctx: &Ctx) -> Result<String> {
        let kind = ctx.config().deploy_target;
        Err(hinted(
            format!(
                "`rollout` asks for a canary or a bake, and the {kind} target does not judge a new version yet"
            ),
            "use `rollout: {strategy: blue-green}` with no `bake_seconds` on this target",
        ))
    }
    /// The deploy record and what staging runs, where the target keeps them.
    fn ledger(&self) -> Option<&dyn Ledger> {
        None
    }
    fn status(&self, ctx: &Ctx) -> Result<Table>;
    /// Removes old versions beyond `keep_previous`; with `execute` false, says which.
    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<Cleanup>>;
    /// Takes what pymdeploy made for `scope` off the target, keeping the deploy record;
    /// its dry run is `plan(ctx, Change::Destroy(scope), None)`. Nothing is undone: a
    /// failure or Ctrl-C stops it, and the error says what is left.
    fn destroy(&self, ctx: &Ctx, scope: Scope, progress: &StepProgress<'_>) -> Result<String>;
    /// Puts `env` in maintenance (`on`: every request answered 503 with `Retry-After` and
    /// the `maintenance_page`, the version left running) or takes it out.
    fn maintenance(&self, ctx: &Ctx, env: PymEnv, on: bool) -> Result<String> {
        let _ = (env, on);
        Err(crate::error::hinted(
            format!(
                "maintenance mode is not available on {}: its traffic does not pass a proxy pymdeploy keeps",
                ctx.config().deploy_target
            ),
            "on the docker target, the live proxy or the edge answers for the service while it is in maintenance",
        ))
    }
}

/// The targets, one line each: its module, its `TargetKind` variant and the `Target`
/// there, and the cargo feature its SDK is behind (none for docker). A target's module
/// is compiled only with its feature; what is known of it without (its keys, what `new`
/// writes) is its `about.rs`, which `config` reads.
macro_rules! targets {
    ($( $module:ident: $kind:ident => $target:ident $(if $feature:literal)?, )*) => {
        $(
            $(#[cfg(feature = $feature)])?
            pub mod $module;
        )*

        /// The configured target, if this build has it.
        pub fn of(ctx: &Ctx) -> Result<&'static dyn Target> {
            match ctx.config().deploy_target {
                $(
                    $(#[cfg(feature = $feature)])?
                    TargetKind::$kind => Ok(&$module::$target),
                )*
                #[allow(unreachable_patterns)]
                other => Err(unsupported(other)),
            }
        }
    };
}

targets! {
    docker: Docker => DockerTarget,
    beanstalk: AwsBeanstalk => BeanstalkTarget if "aws-beanstalk",
    cloudrun: GcpCloudRun => CloudRunTarget if "gcp-cloud-run",
    gke: Gke => GkeTarget if "gke",
}

/// `pymdeploy proxy-image`: the docker target's live proxy image, made here and pushed
/// to `push_to` for engines that cannot have it made from the deploying binary.
pub fn proxy_image(ctx: &Ctx, push_to: Option<&str>) -> Result<String> {
    docker::make_proxy_image(ctx, push_to)
}

/// A target's own lock, held until dropped.
pub type Guard = Box<dyn std::any::Any>;

/// What `status` shows: named columns and their rows, printed as an aligned table or,
/// with `--json`, as one JSON object per row.
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// The header and the rows, each column as wide as its widest cell (the last one
    /// unpadded).
    pub fn lines(&self) -> Vec<String> {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, String::len))
                    .chain([self.columns[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == last {
                        c.to_string()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        std::iter::once(line(self.columns.clone()))
            .chain(
                self.rows
                    .iter()
                    .map(|r| line(r.iter().map(String::as_str).collect())),
            )
            .collect()
    }

    /// One object per row, keyed by the lowercased column names.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.rows
            .iter()
            .map(|r| {
                serde_json::Value::Object(
                    self.columns
                        .iter()
                        .zip(r)
                        .map(|(c, v)| (c.to_lowercase(), serde_json::Value::String(v.clone())))
                        .collect(),
                )
            })
            .collect()
    }
}

/// What `cleanup` does with one old version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Kept: within `keep_previous`, or (the reason) busy.
    Keep(Option<String>),
    /// Beyond `keep_previous`: removed with `--execute` (the target's verb, as done and as
    /// to do: "removed"/"remove", "terminating"/"terminate"), else only named.
    Go {
        done: bool,
        did: &'static str,
        would: &'static str,
    },
}

/// One line of `cleanup`: an old version (what the target runs it as, and its version
/// when that is not the name) and its fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleanup {
    pub name: String,
    pub version: Option<String>,
    pub fate: Fate,
}

impl Cleanup {
    /// Whether cleanup acts (or would act) on it.
    pub fn goes(&self) -> bool {
        matches!(self.fate, Fate::Go { .. })
    }
}

impl std::fmt::Display for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match &self.fate {
            Fate::Keep(why) => why.as_deref(),
            Fate::Go { .. } => None,
        };
        let detail: Vec<&str> = self.version.as_deref().into_iter().chain(why).collect();
        let what = match detail.is_empty() {
            true => self.name.clone(),
            false => format!("{} ({})", self.name, detail.join(", ")),
        };
        match &self.fate {
            Fate::Keep(_) => write!(f, "keep {what}"),
            Fate::Go {
                done: true, did, ..
            } => write!(f, "{did} {what}"),
            Fate::Go {
                done: false, would, ..
            } => write!(f, "would {would} {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn a_table_aligns_its_columns_and_says_each_row_as_json() {
        let mut t = Table::new(&["ENV", "VERSION", "IMAGE"]);
        t.rows
            .push(vec!["previous".into(), "v1".into(), "repo@sha256:1".into()]);
        t.rows.push(vec![
            "live".into(),
            "261128-1300-12-abcdef".into(),
            "repo@sha256:2".into(),
        ]);
        assert_eq!(
            t.lines(),
            [
                "ENV      VERSION               IMAGE",
                "previous v1                    repo@sha256:1",
                "live     261128-1300-12-abcdef repo@sha256:2"
            ]
        );
        assert_eq!(
            t.json()[1],
            serde_json::json!({"env": "live", "version": "261128-1300-12-abcdef", "image": "repo@sha256:2"})
        );
    }
}
