//! Elastic Beanstalk's Query API (version 2010-12-01): the operations a blue/green deploy
//! uses, with AWS's XML shapes, error codes and lifecycle (Launching → Ready with health
//! Grey → Green or Red, Updating, Terminating → Terminated) and the events each step writes.
//!
//! Implemented: CreateApplication, DescribeApplications, DeleteApplication,
//! CreateStorageLocation, CreateApplicationVersion (`Process`), DescribeApplicationVersions,
//! DeleteApplicationVersion, CheckDNSAvailability, CreateEnvironment, DescribeEnvironments,
//! UpdateEnvironment (version, options, `OptionsToRemove`, description),
//! AbortEnvironmentUpdate, RestartAppServer, SwapEnvironmentCNAMEs, TerminateEnvironment,
//! DescribeEvents (paginated), DescribeConfigurationSettings (of an environment, effective:
//! defaults included), DescribeEnvironmentResources, DescribeEnvironmentHealth and
//! DescribeInstancesHealth (enhanced health), RequestEnvironmentInfo and
//! RetrieveEnvironmentInfo (the container's log, in S3), ListTagsForResource,
//! UpdateTagsForResource, ListAvailableSolutionStacks, ListPlatformVersions (with its
//! filters), DescribeConfigurationOptions (the options of `options.rs`, for a platform or
//! an environment). Anything else answers
//! `InvalidAction`, as AWS answers an unknown action; a request without one,
//! `MissingAction`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::options;
use crate::xml::Xml;
use crate::{ApiError, Reply, Shared, engine, iso, now_ms, parse_iso, reply};

const XMLNS: &str = "http://elasticbeanstalk.amazonaws.com/docs/2010-12-01/";
/// What ListAvailableSolutionStacks answers; CreateEnvironment takes any Docker one.
const SOLUTION_STACKS: &[&str] = &[
    "64bit Amazon Linux 2023 v4.7.1 running Docker",
    "64bit Amazon Linux 2023 v4.7.1 running ECS",
    "64bit Amazon Linux 2023 v6.6.1 running Node.js 22",
    "64bit Amazon Linux 2023 v4.5.1 running Python 3.12",
];
const ENV_NAMESPACE: &str = "aws:elasticbeanstalk:application:environment";

#[derive(Default)]
pub struct Beanstalk {
    apps: BTreeMap<String, i64>,
    versions: Vec<AppVersion>,
    envs: Vec<Env>,
    events: Vec<Event>,
    /// Tags by resource ARN (applications, versions, environments).
    tags: BTreeMap<String, Vec<(String, String)>>,
    /// What RequestEnvironmentInfo gathered: (environment id, info type, instance, when, URL).
    info: Vec<(String, String, String, i64, String)>,
}

struct AppVersion {
    app: String,
    label: String,
    bucket: String,
    key: String,
    description: String,
    created: i64,
    /// `Process=true`: the bundle was validated (PROCESSED, or FAILED); else UNPROCESSED.
    status: &'static str,
}

#[derive(Clone)]
struct Env {
    id: String,
    name: String,
    app: String,
    label: String,
    stack: Option<String>,
    platform: Option<String>,
    cname: String,
    description: Option<String>,
    status: &'static str,
    health: &'static str,
    health_status: &'static str,
    created: i64,
    updated: i64,
    options: Vec<(String, String, String)>,
    container: Option<String>,
    port: Option<u16>,
    generation: u64,
    /// The RequestId of the operation that started what the environment does now; its
    /// events carry it.
    request: String,
    /// Why the last health check failed (DescribeEnvironmentHealth's `Causes`).
    causes: Vec<String>,
    /// While an UpdateEnvironment waits to run: the version and options before it, which
    /// AbortEnvironmentUpdate restores.
    previous: Option<Before>,
    /// When the instance (container) now running was launched.
    launched: i64,
}

/// An environment before an update: its version label, options and description.
type Before = (String, Vec<(String, String, String)>, Option<String>);

struct Event {
    at: i64,
    request: Option<String>,
    app: String,
    env: Option<String>,
    label: Option<String>,
    severity: &'static str,
    message: String,
}

impl Beanstalk {
    /// The loopback port of the container behind a CNAME.
    pub fn backend_for(&self, cname: &str) -> Option<u16> {
        self.envs
            .iter()
            .find(|e| e.status != "Terminated" && e.cname.eq_ignore_ascii_case(cname))
            .and_then(|e| e.port)
    }

    /// One line per environment of `app`, terminated ones too: what routes its CNAME (the
    /// container and its loopback port) besides its state, for a test's failure message.
    pub fn dump(&self, app: &str) -> String {
        self.envs
            .iter()
            .filter(|e| e.app == app)
            .map(|e| {
                format!(
                    "{} {} {} cname={} port={:?} container={:?} label={}\n",
                    e.name, e.status, e.health, e.cname, e.port, e.container, e.label
                )
            })
            .collect()
    }

    pub fn summary(&self, app: &str) -> Vec<(String, String, String, String)> {
        self.envs
            .iter()
            .filter(|e| e.app == app)
            .map(|e| {
                (
                    e.name.clone(),
                    e.status.to_string(),
                    e.health.to_string(),
                    e.cname.clone(),
                )
            })
            .collect()
    }

    pub fn options(&self, app: &str, env: &str) -> Vec<(String, String, String)> {
        self.envs
            .iter()
            .rev()
            .find(|e| e.app == app && e.name == env)
            .map(|e| e.options.clone())
            .unwrap_or_default()
    }

    pub fn containers(&self) -> Vec<String> {
        self.envs
            .iter()
            .filter(|e| e.status != "Terminated")
            .filter_map(|e| e.container.clone())
            .collect()
    }

    fn live(&self) -> impl Iterator<Item = &Env> {
        self.envs.iter().filter(|e| e.status != "Terminated")
    }

    fn env_mut(&mut self, id: &str) -> Option<&mut Env> {
        self.envs.iter_mut().find(|e| e.id == id)
    }

    /// Moves an environment to `status` with an INFO event; returns it as it is now.
    fn transition(&mut self, id: &str, status: &'static str, message: impl Into<String>) -> Env {
        let e = self.env_mut(id).expect("a known environment");
        e.status = status;
        e.updated = now_ms();
        let e = e.clone();
        self.event(&e, "INFO", message);
        e
    }

    /// Adds (or replaces) tags of a resource.
    fn tag(&mut self, arn: String, tags: Vec<(String, String)>) {
        let have = self.tags.entry(arn).or_default();
        for (k, v) in tags {
            have.retain(|(key, _)| key != &k);
            have.push((k, v));
        }
    }

    /// The resource an ARN names, if it exists (tags can only be on one that does).
    fn arn_exists(&self, o: &crate::Options, arn: &str) -> bool {
        self.apps.keys().any(|a| app_arn(o, a) == arn)
            || self
                .versions
                .iter()
                .any(|v| version_arn(o, &v.app, &v.label) == arn)
            || self.live().any(|e| env_arn(o, e) == arn)
    }

    fn event(&mut self, env: &Env, severity: &'static str, message: impl Into<String>) {
        let at = now_ms().max(self.events.last().map_or(0, |e| e.at + 1));
        let request = Some(env.request.clone()).filter(|r| !r.is_empty());
        self.events.push(Event {
            at,
            request,
            app: env.app.clone(),
            env: Some(env.name.clone()),
            label: Some(env.label.clone()),
            severity,
            message: message.into(),
        });
    }
}

/// The form parameters of a Query request.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k).ok_or_else(|| {
            ApiError::new(
                400,
                "MissingParameter",
                format!("The request must contain the parameter {k}"),
            )
        })
    }

    /// `K.member.1`, `K.member.2`, … in order.
    fn list(&self, k: &str) -> Vec<String> {
        let prefix = format!("{k}.member.");
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(key, v)| {
                key.strip_prefix(&prefix)
                    .and_then(|n| n.parse().ok())
                    .map(|n| (n, v.clone()))
            })
            .collect();
        items.sort();
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `K.member.N.Key` / `.Value` pairs.
    fn tags(&self, k: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for n in 1.. {
            let Some(key) = self.get(&format!("{k}.member.{n}.Key")) else {
                break;
            };
            out.push((
                key.to_string(),
                self.get(&format!("{k}.member.{n}.Value"))
                    .unwrap_or("")
                    .to_string(),
            ));
        }
        out
    }

    fn options(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for n in 1.. {
            let at = |f: &str| {
                self.get(&format!("OptionSettings.member.{n}.{f}"))
                    .map(String::from)
            };
            let (Some(ns), Some(name)) = (at("Namespace"), at("OptionName")) else {
                break;
            };
            out.push((ns, name, at("Value").unwrap_or_default()));
        }
        out
    }
}

pub async fn handle(shared: &Arc<Shared>, body: &[u8]) -> Reply {
    let p = Params(form_urlencoded::parse(body).into_owned().collect());
    let action = p.get("Action").unwrap_or("").to_string();
    let fault = shared.lock().call(&action);
    let request_id = shared.request_id();
    // AWS names the request in a header too (`x-amzn-RequestId`): where SDKs read it.
    let with_id = |mut r: Reply| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&request_id) {
            r.headers_mut().insert("x-amzn-requestid", v);
        }
        r
    };
    let result = match fault {
        Some(e) => Err(e),
        None => dispatch(shared, &action, &p, &request_id),
    };
    match result {
        Ok(inner) => {
            let mut x = Xml::default();
            x.0.push_str(&format!(r#"<{action}Response xmlns="{XMLNS}">"#));
            if let Some(inner) = inner {
                x.open(&format!("{action}Result"));
                x.0.push_str(&inner);
                x.close(&format!("{action}Result"));
            }
            x.open("ResponseMetadata")
                .el("RequestId", &request_id)
                .close("ResponseMetadata")
                .close(&format!("{action}Response"));
            with_id(reply(200, "text/xml", x.0))
        }
        Err(e) => {
            let mut x = Xml::default();
            x.0.push_str(&format!(r#"<ErrorResponse xmlns="{XMLNS}">"#));
            let kind = if e.status >= 500 {
                "Receiver"
            } else {
                "Sender"
            };
            x.open("Error")
                .el("Type", kind)
                .el("Code", &e.code)
                .el("Message", &e.message)
                .close("Error");
            x.el("RequestId", &request_id).close("ErrorResponse");
            with_id(reply(e.status, "text/xml", x.0))
        }
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    action: &str,
    p: &Params,
    request_id: &str,
) -> Result<Option<String>, ApiError> {
    let o = &shared.opts;
    let mut x = Xml::default();
    let mut guard = shared.lock();
    let st = &mut *guard;
    let eb = &mut st.eb;
    match action {
        "CreateApplication" => {
            let name = p.require("ApplicationName")?;
            if eb.apps.contains_key(name) {
                return Err(ApiError::invalid(format!(
                    "Application {name} already exists."
                )));
            }
            let now = now_ms();
            eb.apps.insert(name.into(), now);
            eb.tag(app_arn(o, name), p.tags("Tags"));
            x.open("Application");
            app_xml(&mut x, o, name, now, &[]);
            x.close("Application");
        }
        "DescribeApplications" => {
            let names = p.list("ApplicationNames");
            x.open("Applications");
            for (name, created) in eb
                .apps
                .iter()
                .filter(|(n, _)| names.is_empty() || names.contains(n))
            {
                let labels: Vec<&str> = eb
                    .versions
                    .iter()
                    .filter(|v| &v.app == name)
                    .map(|v| v.label.as_str())
                    .collect();
                x.open("member");
                app_xml(&mut x, o, name, *created, &labels);
                x.close("member");
            }
            x.close("Applications");
        }
        "CreateStorageLocation" => {
            let bucket = format!("elasticbeanstalk-{}-{}", o.region, o.account);
            st.bucket(&bucket);
            x.el("S3Bucket", &bucket);
        }
        "CreateApplicationVersion" => {
            let app = p.require("ApplicationName")?;
            let label = p.require("VersionLabel")?;
            if !eb.apps.contains_key(app) {
                if p.get("AutoCreateApplication") == Some("true") {
                    eb.apps.insert(app.into(), now_ms());
                } else {
                    return Err(ApiError::invalid(format!(
                        "No Application named '{app}' found."
                    )));
                }
            }
            if eb.versions.iter().any(|v| v.app == app && v.label == label) {
                return Err(ApiError::invalid(format!(
                    "Application Version {label} already exists."
                )));
            }
            let (bucket, key) = (
                p.require("SourceBundle.S3Bucket")?.to_string(),
                p.require("SourceBundle.S3Key")?.to_string(),
            );
            if st.buckets.get(&bucket).and_then(|b| b.get(&key)).is_none() {
                return Err(ApiError::new(
                    400,
                    "InvalidParameterCombination",
                    format!(
                        "Unable to download from S3 location (Bucket: {bucket} Key: {key}). Reason: Not Found"
                    ),
                ));
            }
            // Process=true validates the bundle now (AWS: PROCESSING, then PROCESSED or FAILED).
            let status = match p.get("Process") {
                Some("true") => {
                    let data = st
                        .buckets
                        .get(&bucket)
                        .and_then(|b| b.get(&key))
                        .map(|o| o.data.clone())
                        .unwrap_or_default();
                    if serde_json::from_slice::<serde_json::Value>(&data)
                        .is_ok_and(|v| v.get("AWSEBDockerrunVersion").is_some())
                    {
                        "PROCESSED"
                    } else {
                        "FAILED"
                    }
                }
                _ => "UNPROCESSED",
            };
            let v = AppVersion {
                app: app.into(),
                label: label.into(),
                bucket,
                key,
                description: p.get("Description").unwrap_or("").into(),
                created: now_ms(),
                status,
            };
            st.eb.tag(version_arn(o, app, label), p.tags("Tags"));
            x.open("ApplicationVersion");
            version_xml(&mut x, o, &v);
            x.close("ApplicationVersion");
            st.eb.versions.push(v);
        }
        "DescribeApplicationVersions" => {
            let labels = p.list("VersionLabels");
            let app = p.get("ApplicationName");
            let matching: Vec<&AppVersion> = eb
                .versions
                .iter()
                .rev()
                .filter(|v| {
                    app.is_none_or(|a| a == v.app)
                        && (labels.is_empty() || labels.contains(&v.label))
                })
                .collect();
            let (versions, next) = page(&matching, p, "versions")?;
            x.open("ApplicationVersions");
            for v in versions {
                x.open("member");
                version_xml(&mut x, o, v);
                x.close("member");
            }
            x.close("ApplicationVersions")
                .opt("NextToken", next.as_deref());
        }
        "ListAvailableSolutionStacks" => {
            x.open("SolutionStacks");
            for s in SOLUTION_STACKS {
                x.el("member", s);
            }
            x.close("SolutionStacks");
        }
        "DescribeConfigurationOptions" => {
            let (stack, platform, single, balancer) = match p.get("EnvironmentName") {
                Some(name) => {
                    let e = eb
                        .live()
                        .find(|e| {
                            e.name == name && p.get("ApplicationName").is_none_or(|a| a == e.app)
                        })
                        .ok_or_else(|| {
                            ApiError::invalid(format!(
                                "No Environment found for EnvironmentName = '{name}'."
                            ))
                        })?;
                    let balancer = e
                        .option("aws:elasticbeanstalk:environment", "LoadBalancerType")
                        .unwrap_or("classic")
                        .to_string();
                    (
                        e.stack.clone(),
                        e.platform.clone(),
                        Some(!e.load_balanced()),
                        balancer,
                    )
                }
                None => {
                    let stack = match (p.get("SolutionStackName"), p.get("PlatformArn")) {
                        (Some(s), _) => SOLUTION_STACKS
                            .iter()
                            .find(|k| **k == s)
                            .copied()
                            .ok_or_else(|| {
                                ApiError::invalid(format!("No Solution Stack named '{s}' found."))
                            })?,
                        (None, Some(arn)) => SOLUTION_STACKS
                            .iter()
                            .find(|k| platform_arn(o, k) == arn)
                            .copied()
                            .ok_or_else(|| {
                                ApiError::invalid(format!("No Platform named '{arn}' found."))
                            })?,
                        (None, None) => {
                            return Err(ApiError::invalid(
                                "You must specify either an EnvironmentName or a SolutionStackName or a PlatformArn.",
                            ));
                        }
                    };
                    (
                        Some(stack.to_string()),
                        Some(platform_arn(o, stack)),
                        None,
                        String::new(),
                    )
                }
            };
            let wanted: Vec<(String, Option<String>)> = (1..)
                .map_while(|n| {
                    let ns = p.get(&format!("Options.member.{n}.Namespace"))?;
                    let name = p.get(&format!("Options.member.{n}.OptionName"));
                    Some((ns.to_string(), name.map(String::from)))
                })
                .collect();
            x.opt("SolutionStackName", stack.as_deref())
                .opt("PlatformArn", platform.as_deref())
                .open("Options");
            for opt in options::OPTIONS {
                let applies =
                    single.is_none_or(|single| options::applies(opt.ns, single, &balancer));
                let asked = wanted.is_empty()
                    || wanted.iter().any(|(ns, name)| {
                        ns == opt.ns && name.as_deref().is_none_or(|n| n == opt.name)
                    });
                if !applies || !asked {
                    continue;
                }
                x.open("member")
                    .el("Namespace", opt.ns)
                    .el("Name", opt.name)
                    .el("DefaultValue", opt.default)
                    .el("ChangeSeverity", opt.severity)
                    .el("UserDefined", "false");
                match opt.kind {
                    options::Kind::List => {
                        x.el("ValueType", "List");
                    }
                    options::Kind::Scalar => {
                        x.el("ValueType", "Scalar");
                    }
                    options::Kind::Boolean | options::Kind::OneOf(_) => {
                        let values: &[&str] = match opt.kind {
                            options::Kind::OneOf(v) => v,
                            _ => &["true", "false"],
                        };
                        x.el("ValueType", "Scalar").open("ValueOptions");
                        for v in values {
                            x.el("member", v);
                        }
                        x.close("ValueOptions");
                    }
                    options::Kind::Range(min, max) => {
                        x.el("ValueType", "Scalar")
                            .el("MinValue", &min.to_string())
                            .el("MaxValue", &max.to_string());
                    }
                }
                x.close("member");
            }
            x.close("Options");
        }
        "ListPlatformVersions" => {
            let filters: Vec<(String, String, Vec<String>)> = (1..)
                .map_while(|n| {
                    let at = format!("Filters.member.{n}");
                    let kind = p.get(&format!("{at}.Type"))?.to_string();
                    let op = p.get(&format!("{at}.Operator")).unwrap_or("=").to_string();
                    Some((kind, op, p.list(&format!("{at}.Values"))))
                })
                .collect();
            x.open("PlatformSummaryList");
            for stack in SOLUTION_STACKS {
                let summary = platform_summary(o, stack);
                let keep = filters.iter().all(|(kind, op, values)| {
                    let field = summary
                        .iter()
                        .find(|(k, _)| k == kind)
                        .map(|(_, v)| v.as_str());
                    field.is_some_and(|f| values.iter().any(|v| matches_filter(f, op, v)))
                });
                if !keep {
                    continue;
                }
                x.open("member")
                    .el("PlatformArn", &platform_arn(o, stack))
                    .el("PlatformOwner", "AWSElasticBeanstalk")
                    .el("PlatformStatus", "Ready");
                for (k, v) in &summary {
                    if matches!(
                        k.as_str(),
                        "PlatformCategory"
                            | "OperatingSystemName"
                            | "OperatingSystemVersion"
                            | "PlatformLifecycleState"
                            | "PlatformVersion"
                            | "PlatformBranchName"
                            | "PlatformBranchLifecycleState"
                    ) {
                        x.el(k, v);
                    }
                }
                x.open("SupportedTierList")
                    .el("member", "WebServer/Standard")
                    .el("member", "Worker/SQS/HTTP")
                    .close("SupportedTierList")
                    .open("SupportedAddonList")
                    .el("member", "Log/S3")
                    .el("member", "Monitoring/Healthd")
                    .el("member", "WorkerDaemon/SQSD")
                    .close("SupportedAddonList")
                    .close("member");
            }
            x.close("PlatformSummaryList");
        }
        "DescribeConfigurationSettings" => {
            let app = p.require("ApplicationName")?;
            if !eb.apps.contains_key(app) {
                return Err(ApiError::invalid(format!(
                    "No Application named '{app}' found."
                )));
            }
            // Saved configurations (CreateConfigurationTemplate) are not implemented, so no
            // template exists: the answer AWS gives for an unknown one.
            if let Some(t) = p.get("TemplateName") {
                return Err(ApiError::invalid(format!(
                    "No Configuration Template named '{app}/{t}' found."
                )));
            }
            let name = p.get("EnvironmentName").ok_or_else(|| {
                ApiError::new(
                    400,
                    "MissingParameter",
                    "The request must contain the parameter EnvironmentName or TemplateName",
                )
            })?;
            let e = eb
                .live()
                .find(|e| e.app == app && e.name == name)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "No Environment found for EnvironmentName = '{name}'."
                    ))
                })?;
            x.open("ConfigurationSettings").open("member");
            x.opt("SolutionStackName", e.stack.as_deref())
                .opt("PlatformArn", e.platform.as_deref());
            x.el("ApplicationName", &e.app)
                .el("EnvironmentName", &e.name)
                .el("DeploymentStatus", "deployed");
            x.el("DateCreated", &iso(e.created))
                .el("DateUpdated", &iso(e.updated))
                .open("OptionSettings");
            for (ns, k, v) in &effective_options(e) {
                x.open("member")
                    .el("Namespace", ns)
                    .el("OptionName", k)
                    .el("Value", v)
                    .close("member");
            }
            x.close("OptionSettings")
                .close("member")
                .close("ConfigurationSettings");
        }
        "CheckDNSAvailability" => {
            let prefix = p.require("CNAMEPrefix")?;
            let cname = cname_of(o, prefix);
            x.el(
                "Available",
                if eb.live().any(|e| e.cname == cname) {
                    "false"
                } else {
                    "true"
                },
            )
            .el("FullyQualifiedCNAME", &cname);
        }
        "CreateEnvironment" => {
            let env = create_environment(shared, eb, p, request_id)?;
            env_xml(&mut x, o, &env);
            let shared = shared.clone();
            tokio::spawn(async move { launch(shared, env.id).await });
        }
        "DescribeEnvironments" => {
            let (names, ids) = (p.list("EnvironmentNames"), p.list("EnvironmentIds"));
            let app = p.get("ApplicationName");
            let label = p.get("VersionLabel");
            let include_deleted = p.get("IncludeDeleted") != Some("false");
            let since = p
                .get("IncludedDeletedBackTo")
                .and_then(parse_iso)
                .unwrap_or(0);
            let matching: Vec<&Env> = eb
                .envs
                .iter()
                .filter(|e| {
                    app.is_none_or(|a| a == e.app)
                        && label.is_none_or(|l| l == e.label)
                        && (names.is_empty() || names.contains(&e.name))
                        && (ids.is_empty() || ids.contains(&e.id))
                        && (e.status != "Terminated" || (include_deleted && e.updated >= since))
                })
                .collect();
            let (envs, next) = page(&matching, p, "environments")?;
            x.open("Environments");
            for e in envs {
                x.open("member");
                env_xml(&mut x, o, e);
                x.close("member");
            }
            x.close("Environments").opt("NextToken", next.as_deref());
        }
        "UpdateEnvironment" => {
            let id = find_env(eb, p, "Environment")?;
            let options = p.options();
            let label = p.get("VersionLabel").map(String::from);
            let e = eb.env_mut(&id).expect("found above").clone();
            if e.status != "Ready" {
                return Err(not_ready(&e.name));
            }
            if let Some(l) = &label
                && !eb.versions.iter().any(|v| v.app == e.app && &v.label == l)
            {
                return Err(ApiError::invalid(format!(
                    "No Application Version named '{l}' found."
                )));
            }
            let e = eb.env_mut(&id).expect("found above");
            e.previous = Some((e.label.clone(), e.options.clone(), e.description.clone()));
            e.request = request_id.to_string();
            for (ns, name, value) in options {
                e.options.retain(|(n, k, _)| !(n == &ns && k == &name));
                e.options.push((ns, name, value));
            }
            // OptionsToRemove: back to the default, which here is the option not being set.
            for n in 1.. {
                let at = |f: &str| {
                    p.get(&format!("OptionsToRemove.member.{n}.{f}"))
                        .map(String::from)
                };
                let (Some(ns), Some(name)) = (at("Namespace"), at("OptionName")) else {
                    break;
                };
                e.options.retain(|(n, k, _)| !(n == &ns && k == &name));
            }
            if let Some(d) = p.get("Description") {
                e.description = Some(d.to_string());
            }
            if let Some(l) = label {
                e.label = l;
            }
            let e = eb.transition(&id, "Updating", "Environment update is starting.");
            env_xml(&mut x, o, &e);
            let shared = shared.clone();
            tokio::spawn(async move { update(shared, e.id).await });
        }
        "SwapEnvironmentCNAMEs" => {
            let a = find_env(eb, p, "SourceEnvironment")?;
            let b = find_env(eb, p, "DestinationEnvironment")?;
            for id in [&a, &b] {
                let e = eb.envs.iter().find(|e| &e.id == id).expect("found above");
                if e.status != "Ready" {
                    return Err(not_ready(&e.name));
                }
            }
            if a == b {
                return Err(ApiError::invalid(
                    "The source and destination environments must differ.",
                ));
            }
            let ca = eb.env_mut(&a).expect("found").cname.clone();
            let cb = std::mem::replace(&mut eb.env_mut(&b).expect("found").cname, ca);
            eb.env_mut(&a).expect("found").cname = cb;
            let name = |id: &str| {
                eb.envs
                    .iter()
                    .find(|e| e.id == id)
                    .map(|e| e.name.clone())
                    .unwrap_or_default()
            };
            let names = format!("'{}' and '{}'", name(&a), name(&b));
            for id in [&a, &b] {
                eb.env_mut(id).expect("found").request = request_id.to_string();
                eb.transition(
                    id,
                    "Updating",
                    format!("Swapping CNAMEs for environments {names}."),
                );
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(shared.opts.step_delay).await;
                let mut st = shared.lock();
                for id in [&a, &b] {
                    if st.eb.env_mut(id).is_some_and(|e| e.status == "Updating") {
                        st.eb.transition(
                            id,
                            "Ready",
                            format!("Completed swapping CNAMEs for environments {names}."),
                        );
                    }
                }
            });
            return Ok(None);
        }
        "TerminateEnvironment" => {
            let id = find_env(eb, p, "Environment")?;
            let e = eb.env_mut(&id).expect("found");
            if e.status == "Terminating" {
                return Err(not_ready(&e.name));
            }
            e.request = request_id.to_string();
            let e = eb.transition(&id, "Terminating", "terminateEnvironment is starting.");
            env_xml(&mut x, o, &e);
            let shared = shared.clone();
            tokio::spawn(async move { terminate(shared, e.id).await });
        }
        "DescribeEvents" => {
            let app = p.get("ApplicationName");
            let env = p.get("EnvironmentName");
            let env_id = p
                .get("EnvironmentId")
                .and_then(|id| eb.envs.iter().find(|e| e.id == id))
                .map(|e| e.name.clone());
            let start = p.get("StartTime").and_then(parse_iso).unwrap_or(0);
            let end = p.get("EndTime").and_then(parse_iso).unwrap_or(i64::MAX);
            let min = severity_rank(p.get("Severity").unwrap_or("TRACE"));
            let matching: Vec<&Event> = eb
                .events
                .iter()
                .rev()
                .filter(|ev| {
                    app.is_none_or(|a| a == ev.app)
                        && env.is_none_or(|n| ev.env.as_deref() == Some(n))
                        && env_id.as_ref().is_none_or(|n| ev.env.as_ref() == Some(n))
                        && ev.at >= start
                        && ev.at < end
                        && severity_rank(ev.severity) >= min
                })
                .collect();
            // DescribeEvents answers at most 1000 events a call, with or without MaxRecords.
            let defaulted;
            let p = if p.get("MaxRecords").is_none() {
                defaulted = Params(
                    p.0.iter()
                        .cloned()
                        .chain([("MaxRecords".to_string(), "1000".to_string())])
                        .collect(),
                );
                &defaulted
            } else {
                p
            };
            let (events, next) = page(&matching, p, "events")?;
            x.open("Events");
            for ev in events {
                x.open("member")
                    .el("EventDate", &iso(ev.at))
                    .el("Message", &ev.message)
                    .el("ApplicationName", &ev.app);
                x.opt("EnvironmentName", ev.env.as_deref())
                    .opt("VersionLabel", ev.label.as_deref())
                    .opt("RequestId", ev.request.as_deref())
                    .el("Severity", ev.severity)
                    .close("member");
            }
            x.close("Events").opt("NextToken", next.as_deref());
        }
        "DescribeEnvironmentResources" => {
            let id = find_env(eb, p, "Environment")?;
            let e = eb.envs.iter().find(|e| e.id == id).expect("found above");
            let named = |x: &mut Xml, list: &str, key: &str, value: Option<String>| {
                x.open(list);
                if let Some(v) = value {
                    x.open("member").el(key, &v).close("member");
                }
                x.close(list);
            };
            x.open("EnvironmentResources")
                .el("EnvironmentName", &e.name);
            named(
                &mut x,
                "AutoScalingGroups",
                "Name",
                Some(format!("awseb-{}-stack-AWSEBAutoScalingGroup-LOCAL", e.id)),
            );
            named(
                &mut x,
                "Instances",
                "Id",
                e.container.as_ref().map(|_| e.instance()),
            );
            named(&mut x, "LaunchConfigurations", "Name", None);
            named(
                &mut x,
                "LaunchTemplates",
                "Id",
                Some(format!("lt-0{}", e.id.trim_start_matches("e-"))),
            );
            named(
                &mut x,
                "LoadBalancers",
                "Name",
                e.load_balanced().then(|| e.load_balancer()),
            );
            named(&mut x, "Triggers", "Name", None);
            named(&mut x, "Queues", "Name", None);
            x.close("EnvironmentResources");
        }
        "DescribeEnvironmentHealth" => {
            let id = find_env(eb, p, "Environment")?;
            let e = eb.envs.iter().find(|e| e.id == id).expect("found above");
            if !e.enhanced() {
                return Err(ApiError::new(
                    400,
                    "InvalidRequestException",
                    format!(
                        "Environment {} does not have enhanced health reporting enabled (aws:elasticbeanstalk:healthreporting:system SystemType=enhanced).",
                        e.name
                    ),
                ));
            }
            // AttributeNames picks what to return; none (or `All`) returns everything.
            let names = p.list("AttributeNames");
            let want = |a: &str| names.is_empty() || names.iter().any(|n| n == a || n == "All");
            x.el("EnvironmentName", &e.name);
            if want("HealthStatus") {
                x.el("HealthStatus", e.health_status);
            }
            if want("Status") {
                x.el("Status", e.status);
            }
            if want("Color") {
                x.el("Color", e.health);
            }
            if want("Causes") {
                x.open("Causes");
                for c in &e.causes {
                    x.el("member", c);
                }
                x.close("Causes");
            }
            if want("InstancesHealth") {
                let running = usize::from(e.container.is_some());
                let (ok, severe, pending) = match e.health_status {
                    "Ok" => (running, 0, 0),
                    "Severe" => (0, running, 0),
                    _ => (0, 0, running),
                };
                x.open("InstancesHealth")
                    .el("NoData", "0")
                    .el("Unknown", "0")
                    .el("Pending", &pending.to_string())
                    .el("Ok", &ok.to_string());
                x.el("Info", "0")
                    .el("Warning", "0")
                    .el("Degraded", "0")
                    .el("Severe", &severe.to_string())
                    .close("InstancesHealth");
            }
            if want("RefreshedAt") {
                x.el("RefreshedAt", &iso(now_ms()));
            }
        }
        "DescribeInstancesHealth" => {
            let id = find_env(eb, p, "Environment")?;
            let e = eb.envs.iter().find(|e| e.id == id).expect("found above");
            if !e.enhanced() {
                return Err(ApiError::new(
                    400,
                    "InvalidRequestException",
                    format!(
                        "Environment {} does not have enhanced health reporting enabled (aws:elasticbeanstalk:healthreporting:system SystemType=enhanced).",
                        e.name
                    ),
                ));
            }
            x.open("InstanceHealthList");
            if e.container.is_some() {
                x.open("member")
                    .el("InstanceId", &e.instance())
                    .el("HealthStatus", e.health_status)
                    .el("Color", e.health);
                x.open("Causes");
                for c in &e.causes {
                    x.el("member", c);
                }
                x.close("Causes")
                    .el("LaunchedAt", &iso(e.launched))
                    .el("AvailabilityZone", &format!("{}a", o.region))
                    .el("InstanceType", "t3.micro");
                x.open("Deployment")
                    .el("VersionLabel", &e.label)
                    .el("Status", "Deployed")
                    .el("DeploymentTime", &iso(e.updated))
                    .close("Deployment");
                x.close("member");
            }
            x.close("InstanceHealthList")
                .el("RefreshedAt", &iso(now_ms()));
        }
        "RequestEnvironmentInfo" => {
            let id = find_env(eb, p, "Environment")?;
            let kind = p.require("InfoType")?.to_string();
            if kind != "tail" && kind != "bundle" {
                return Err(ApiError::invalid(format!(
                    "Value '{kind}' at 'infoType' failed to satisfy constraint: Member must satisfy enum value set: [tail, bundle]"
                )));
            }
            let e = eb
                .envs
                .iter()
                .find(|e| e.id == id)
                .expect("found above")
                .clone();
            eb.event(&e, "INFO", "requestEnvironmentInfo is starting.");
            let shared = shared.clone();
            tokio::spawn(async move { gather_info(shared, e, kind).await });
            return Ok(None);
        }
        "RetrieveEnvironmentInfo" => {
            let id = find_env(eb, p, "Environment")?;
            let kind = p.require("InfoType")?;
            x.open("EnvironmentInfo");
            for (_, k, instance, at, url) in eb
                .info
                .iter()
                .filter(|(env, k, ..)| env == &id && k == kind)
            {
                x.open("member")
                    .el("InfoType", k)
                    .el("Ec2InstanceId", instance)
                    .el("SampleTimestamp", &iso(*at))
                    .el("Message", url)
                    .close("member");
            }
            x.close("EnvironmentInfo");
        }
        "RestartAppServer" => {
            let id = find_env(eb, p, "Environment")?;
            let e = eb.env_mut(&id).expect("found above");
            if e.status != "Ready" {
                return Err(not_ready(&e.name));
            }
            e.request = request_id.to_string();
            let e = eb.transition(&id, "Updating", "restartAppServer is starting.");
            let shared = shared.clone();
            tokio::spawn(async move { restart(shared, e.id).await });
            return Ok(None);
        }
        "AbortEnvironmentUpdate" => {
            let id = find_env(eb, p, "Environment")?;
            let e = eb.env_mut(&id).expect("found above");
            let Some((label, options, description)) =
                e.previous.take().filter(|_| e.status == "Updating")
            else {
                return Err(ApiError::invalid(format!(
                    "Environment named {} has no update in progress that can be aborted.",
                    e.name
                )));
            };
            (e.label, e.options, e.description) = (label, options, description);
            e.request = request_id.to_string();
            let e = eb.transition(&id, "Ready", "Abort of environment update is starting.");
            eb.event(&e, "INFO", "Environment update was aborted; the environment keeps its previous version and configuration.");
            return Ok(None);
        }
        "DeleteApplicationVersion" => {
            let app = p.require("ApplicationName")?;
            let label = p.require("VersionLabel")?;
            let i = eb
                .versions
                .iter()
                .position(|v| v.app == app && v.label == label)
                .ok_or_else(|| {
                    ApiError::invalid(format!("No Application Version named '{label}' found."))
                })?;
            if let Some(e) = eb.live().find(|e| e.app == app && e.label == label) {
                return Err(ApiError::invalid(format!(
                    "Unable to delete application version {label} because it is being deployed to running environment {}.",
                    e.name
                )));
            }
            let v = eb.versions.remove(i);
            eb.tags.remove(&version_arn(o, app, label));
            if p.get("DeleteSourceBundle") == Some("true")
                && let Some(b) = st.buckets.get_mut(&v.bucket)
            {
                b.remove(&v.key);
            }
            return Ok(None);
        }
        "DeleteApplication" => {
            let app = p.require("ApplicationName")?.to_string();
            if !eb.apps.contains_key(&app) {
                return Err(ApiError::invalid(format!(
                    "No Application named '{app}' found."
                )));
            }
            let running: Vec<String> = eb
                .live()
                .filter(|e| e.app == app)
                .map(|e| e.id.clone())
                .collect();
            if !running.is_empty() && p.get("TerminateEnvByForce") != Some("true") {
                return Err(ApiError::invalid(format!(
                    "Unable to delete application {app} because it has running environments; terminate them first or set TerminateEnvByForce."
                )));
            }
            for id in running {
                if eb
                    .envs
                    .iter()
                    .any(|e| e.id == id && e.status != "Terminating")
                {
                    eb.env_mut(&id).expect("listed").request = request_id.to_string();
                    eb.transition(&id, "Terminating", "terminateEnvironment is starting.");
                    let shared = shared.clone();
                    tokio::spawn(async move { terminate(shared, id).await });
                }
            }
            eb.apps.remove(&app);
            eb.tags.remove(&app_arn(o, &app));
            eb.versions.retain(|v| v.app != app);
            return Ok(None);
        }
        "ListTagsForResource" => {
            let arn = p.require("ResourceArn")?;
            if !eb.arn_exists(o, arn) {
                return Err(ApiError::new(
                    400,
                    "ResourceNotFoundException",
                    format!("Resource {arn} not found."),
                ));
            }
            x.el("ResourceArn", arn).open("ResourceTags");
            for (k, v) in eb.tags.get(arn).into_iter().flatten() {
                x.open("member").el("Key", k).el("Value", v).close("member");
            }
            x.close("ResourceTags");
        }
        "UpdateTagsForResource" => {
            let arn = p.require("ResourceArn")?.to_string();
            if !eb.arn_exists(o, &arn) {
                return Err(ApiError::new(
                    400,
                    "ResourceNotFoundException",
                    format!("Resource {arn} not found."),
                ));
            }
            let remove = p.list("TagsToRemove");
            let add = p.tags("TagsToAdd");
            if add
                .iter()
                .any(|(k, _)| k.starts_with("aws:") || k.starts_with("elasticbeanstalk:"))
                || remove
                    .iter()
                    .any(|k| k.starts_with("aws:") || k.starts_with("elasticbeanstalk:"))
            {
                return Err(ApiError::invalid(
                    "Tag keys starting with 'aws:' or 'elasticbeanstalk:' are reserved.",
                ));
            }
            eb.tags
                .entry(arn.clone())
                .or_default()
                .retain(|(k, _)| !remove.contains(k));
            eb.tag(arn, add);
            return Ok(None);
        }
        "" => {
            return Err(ApiError::new(
                400,
                "MissingAction",
                "The request must contain the parameter Action.",
            ));
        }
        other => {
            return Err(ApiError::new(
                400,
                "InvalidAction",
                format!(
                    "The action {other} is not valid for this web service (or this local Beanstalk does not implement it)."
                ),
            ));
        }
    }
    Ok(Some(x.0))
}

fn create_environment(
    shared: &Shared,
    eb: &mut Beanstalk,
    p: &Params,
    request_id: &str,
) -> Result<Env, ApiError> {
    let o = &shared.opts;
    let app = p.require("ApplicationName")?;
    let name = p.require("EnvironmentName")?;
    if !eb.apps.contains_key(app) {
        return Err(ApiError::invalid(format!(
            "No Application named '{app}' found."
        )));
    }
    let valid = (4..=40).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Err(ApiError::invalid(format!(
            "Value {name} at 'EnvironmentName' failed to satisfy constraint: 4 to 40 letters, digits and hyphens, not starting or ending with a hyphen"
        )));
    }
    if eb.live().any(|e| e.name == name) {
        return Err(ApiError::invalid(format!(
            "Environment {name} already exists."
        )));
    }
    let label = p.require("VersionLabel")?;
    if !eb.versions.iter().any(|v| v.app == app && v.label == label) {
        return Err(ApiError::invalid(format!(
            "No Application Version named '{label}' found."
        )));
    }
    let (stack, platform) = (
        p.get("SolutionStackName").map(String::from),
        p.get("PlatformArn").map(String::from),
    );
    match (&stack, &platform) {
        (None, None) => {
            return Err(ApiError::invalid(
                "Either SolutionStackName, PlatformArn or TemplateName must be specified.",
            ));
        }
        (Some(s), _) if !s.contains("Docker") => {
            return Err(ApiError::invalid(format!(
                "No Solution Stack named '{s}' found."
            )));
        }
        (_, Some(a)) if !a.contains("Docker") => {
            return Err(ApiError::invalid(format!("No Platform named '{a}' found.")));
        }
        _ => {}
    }
    // AWS describes an environment by both: the stack's name and its platform's ARN.
    let (stack, platform) = match (stack, platform) {
        (Some(s), None) => (Some(s.clone()), Some(platform_arn(o, &s))),
        (None, Some(a)) => (stack_of(&a), Some(a)),
        both => both,
    };
    let prefix = p
        .get("CNAMEPrefix")
        .map(String::from)
        .unwrap_or_else(|| format!("{name}-{}", shared.ids.next()));
    let cname = cname_of(o, &prefix);
    if eb.live().any(|e| e.cname == cname) {
        return Err(ApiError::invalid(format!(
            "DNS name ({cname}) is not available."
        )));
    }
    let now = now_ms();
    let env = Env {
        id: format!("e-{:010x}", shared.ids.next() * 7919 + 1_000_003),
        name: name.into(),
        app: app.into(),
        label: label.into(),
        stack,
        platform,
        cname,
        description: p.get("Description").map(String::from),
        status: "Launching",
        health: "Grey",
        health_status: "Pending",
        created: now,
        updated: now,
        options: p.options(),
        container: None,
        port: None,
        generation: 0,
        request: request_id.to_string(),
        causes: Vec::new(),
        previous: None,
        launched: now,
    };
    eb.tag(env_arn(o, &env), p.tags("Tags"));
    eb.envs.push(env.clone());
    Ok(env)
}

/// The id of the environment a request names by `{prefix}Name` or `{prefix}Id`.
fn find_env(eb: &Beanstalk, p: &Params, prefix: &str) -> Result<String, ApiError> {
    let by_name = p.get(&format!("{prefix}Name"));
    let by_id = p.get(&format!("{prefix}Id"));
    eb.live()
        .find(|e| by_name.is_some_and(|n| n == e.name) || by_id.is_some_and(|i| i == e.id))
        .map(|e| e.id.clone())
        .ok_or_else(|| match (by_name, by_id) {
            (Some(n), _) => {
                ApiError::invalid(format!("No Environment found for EnvironmentName = '{n}'."))
            }
            (_, Some(i)) => {
                ApiError::invalid(format!("No Environment found for EnvironmentId = '{i}'."))
            }
            _ => ApiError::new(
                400,
                "MissingParameter",
                format!("The request must contain {prefix}Name or {prefix}Id"),
            ),
        })
}

/// One page of `items`, as AWS pages its Describe operations: `MaxRecords` (1 to 1000;
/// none: every item in one answer) and `NextToken` (opaque to clients: here where the page
/// before stopped, tied to the operation). Returns the page and the token of the next.
fn page<'a, T>(
    items: &'a [T],
    p: &Params,
    what: &str,
) -> Result<(&'a [T], Option<String>), ApiError> {
    let max: Option<usize> = match p.get("MaxRecords").map(|m| m.parse::<usize>()) {
        None => None,
        Some(Ok(m)) if (1..=1000).contains(&m) => Some(m),
        Some(_) => {
            return Err(ApiError::new(
                400,
                "ValidationError",
                format!(
                    "1 validation error detected: Value '{}' at 'maxRecords' failed to satisfy constraint: Member must have value between 1 and 1000",
                    p.get("MaxRecords").unwrap_or_default()
                ),
            ));
        }
    };
    let prefix = format!("pym-{what}-");
    let skip: usize = match p.get("NextToken") {
        None => 0,
        Some(t) => t
            .strip_prefix(&prefix)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::invalid(format!("Invalid NextToken: {t}")))?,
    };
    let rest = items.get(skip..).unwrap_or_default();
    match max {
        Some(m) if rest.len() > m => Ok((&rest[..m], Some(format!("{prefix}{}", skip + m)))),
        _ => Ok((rest, None)),
    }
}

fn not_ready(name: &str) -> ApiError {
    ApiError::invalid(format!(
        "Environment named {name} is in an invalid state for this operation. Must be Ready."
    ))
}

fn cname_of(o: &crate::Options, prefix: &str) -> String {
    format!(
        "{}.{}.elasticbeanstalk.localhost",
        prefix.to_ascii_lowercase(),
        o.region
    )
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "TRACE" => 0,
        "DEBUG" => 1,
        "INFO" => 2,
        "WARN" => 3,
        "ERROR" => 4,
        _ => 5,
    }
}

fn app_xml(x: &mut Xml, o: &crate::Options, name: &str, created: i64, labels: &[&str]) {
    x.el("ApplicationArn", &app_arn(o, name));
    x.el("ApplicationName", name)
        .el("DateCreated", &iso(created))
        .el("DateUpdated", &iso(created));
    x.open("Versions");
    for l in labels {
        x.el("member", l);
    }
    x.close("Versions")
        .open("ConfigurationTemplates")
        .close("ConfigurationTemplates");
}

fn version_xml(x: &mut Xml, o: &crate::Options, v: &AppVersion) {
    x.el("ApplicationVersionArn", &version_arn(o, &v.app, &v.label));
    x.el("ApplicationName", &v.app)
        .el("Description", &v.description)
        .el("VersionLabel", &v.label);
    x.open("SourceBundle")
        .el("S3Bucket", &v.bucket)
        .el("S3Key", &v.key)
        .close("SourceBundle");
    x.el("DateCreated", &iso(v.created))
        .el("DateUpdated", &iso(v.created))
        .el("Status", v.status);
}

fn env_xml(x: &mut Xml, o: &crate::Options, e: &Env) {
    x.el("EnvironmentName", &e.name)
        .el("EnvironmentId", &e.id)
        .el("ApplicationName", &e.app)
        .el("VersionLabel", &e.label)
        .opt("Description", e.description.as_deref());
    x.opt("SolutionStackName", e.stack.as_deref())
        .opt("PlatformArn", e.platform.as_deref());
    x.el("EndpointURL", &e.endpoint(o)).el("CNAME", &e.cname);
    x.el("DateCreated", &iso(e.created))
        .el("DateUpdated", &iso(e.updated))
        .el("Status", e.status);
    let abortable = e.status == "Updating" && e.previous.is_some();
    x.el(
        "AbortableOperationInProgress",
        if abortable { "true" } else { "false" },
    )
    .el("Health", e.health);
    // HealthStatus is reported only with enhanced health.
    if e.enhanced() {
        x.el("HealthStatus", e.health_status);
    }
    if e.load_balanced() {
        x.open("Resources")
            .open("LoadBalancer")
            .el("LoadBalancerName", &e.load_balancer())
            .el("Domain", &e.endpoint(o));
        x.open("Listeners")
            .open("member")
            .el("Protocol", "http")
            .el("Port", "80")
            .close("member")
            .close("Listeners");
        x.close("LoadBalancer").close("Resources");
    }
    x.open("Tier")
        .el("Name", "WebServer")
        .el("Type", "Standard")
        .el("Version", "1.0")
        .close("Tier");
    x.el("EnvironmentArn", &env_arn(o, e));
}

fn app_arn(o: &crate::Options, app: &str) -> String {
    format!(
        "arn:aws:elasticbeanstalk:{}:{}:application/{app}",
        o.region, o.account
    )
}

fn version_arn(o: &crate::Options, app: &str, label: &str) -> String {
    format!(
        "arn:aws:elasticbeanstalk:{}:{}:applicationversion/{app}/{label}",
        o.region, o.account
    )
}

fn env_arn(o: &crate::Options, e: &Env) -> String {
    format!(
        "arn:aws:elasticbeanstalk:{}:{}:environment/{}/{}",
        o.region, o.account, e.app, e.name
    )
}

/// `64bit Amazon Linux 2023 v4.7.1 running Docker` →
/// `arn:aws:elasticbeanstalk:<region>::platform/Docker running on 64bit Amazon Linux 2023/4.7.1`.
/// A platform's fields as ListPlatformVersions reports them and its filters read them.
fn platform_summary(o: &crate::Options, stack: &str) -> Vec<(String, String)> {
    let (os, rest) = stack.split_once(" v").unwrap_or((stack, ""));
    let (version, name) = rest.split_once(" running ").unwrap_or((rest, "Docker"));
    let category = name.split_whitespace().next().unwrap_or(name);
    let branch = format!("{name} running on {os}");
    [
        ("PlatformName", branch.clone()),
        ("PlatformVersion", version.to_string()),
        ("PlatformStatus", "Ready".to_string()),
        ("PlatformOwner", "AWSElasticBeanstalk".to_string()),
        ("PlatformCategory", category.to_string()),
        ("OperatingSystemName", "Amazon Linux".to_string()),
        ("OperatingSystemVersion", "2023".to_string()),
        ("PlatformLifecycleState", "Recommended".to_string()),
        ("PlatformBranchName", branch),
        ("PlatformBranchLifecycleState", "Supported".to_string()),
        ("SupportedTier", "WebServer/Standard".to_string()),
        ("PlatformArn", platform_arn(o, stack)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A ListPlatformVersions filter's test: `=`, `!=`, `contains`, `begins_with`,
/// `ends_with`, and for versions `<`, `<=`, `>`, `>=` (numbers compared part by part).
fn matches_filter(field: &str, op: &str, value: &str) -> bool {
    let version = |v: &str| -> Vec<u64> { v.split('.').filter_map(|n| n.parse().ok()).collect() };
    match op {
        "=" => field == value,
        "!=" => field != value,
        "contains" => field.contains(value),
        "begins_with" => field.starts_with(value),
        "ends_with" => field.ends_with(value),
        "<" => version(field) < version(value),
        "<=" => version(field) <= version(value),
        ">" => version(field) > version(value),
        ">=" => version(field) >= version(value),
        _ => false,
    }
}

fn platform_arn(o: &crate::Options, stack: &str) -> String {
    let (os, rest) = stack.split_once(" v").unwrap_or((stack, ""));
    let (version, name) = rest.split_once(" running ").unwrap_or((rest, "Docker"));
    format!(
        "arn:aws:elasticbeanstalk:{}::platform/{name} running on {os}/{version}",
        o.region
    )
}

/// The solution stack a platform ARN names (the inverse of `platform_arn`).
fn stack_of(arn: &str) -> Option<String> {
    let platform = arn.split_once(":platform/")?.1;
    let (name_os, version) = platform.rsplit_once('/')?;
    let (name, os) = name_os.split_once(" running on ")?;
    Some(format!("{os} v{version} running {name}"))
}

/// The defaults AWS documents for the options this local Beanstalk acts on or reports
/// ("General options for all environments" and "Docker platform options"), each as
/// (namespace, option, value); DescribeConfigurationSettings lists them under the ones set.
/// An environment's effective configuration: every documented default that applies to
/// it (its type, its load balancer), with the options set on it in their place, and those
/// without a default (its environment properties) after them.
fn effective_options(e: &Env) -> Vec<(String, String, String)> {
    let single = !e.load_balanced();
    let balancer = e
        .option("aws:elasticbeanstalk:environment", "LoadBalancerType")
        .unwrap_or("classic");
    let mut out: Vec<(String, String, String)> = options::OPTIONS
        .iter()
        .filter(|o| options::applies(o.ns, single, balancer))
        .map(|o| {
            let default = match (o.ns, o.name) {
                ("aws:autoscaling:asg", "MaxSize") if single => "1",
                _ => o.default,
            };
            (o.ns.to_string(), o.name.to_string(), default.to_string())
        })
        .collect();
    for (ns, k, v) in &e.options {
        match out.iter_mut().find(|(n, key, _)| n == ns && key == k) {
            Some(slot) => slot.2 = v.clone(),
            None => out.push((ns.clone(), k.clone(), v.clone())),
        }
    }
    out
}

impl Env {
    fn option(&self, ns: &str, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, k, _)| n == ns && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    fn enhanced(&self) -> bool {
        self.option("aws:elasticbeanstalk:healthreporting:system", "SystemType") == Some("enhanced")
    }

    fn load_balanced(&self) -> bool {
        self.option("aws:elasticbeanstalk:environment", "EnvironmentType") != Some("SingleInstance")
    }

    fn load_balancer(&self) -> String {
        format!("awseb-{}-AWSEBLoa-LOCAL", self.id)
    }

    fn endpoint(&self, o: &crate::Options) -> String {
        format!("{}.{}.elb.localhost", self.load_balancer(), o.region)
    }

    /// The id of the instance running the environment now: one per container.
    fn instance(&self) -> String {
        format!(
            "i-0{}{:04x}",
            self.id.trim_start_matches("e-"),
            self.generation
        )
    }
}

fn with_env<T>(
    shared: &Shared,
    id: &str,
    f: impl FnOnce(&mut Beanstalk, &mut Env) -> T,
) -> Option<T> {
    let mut st = shared.lock();
    let i = st.eb.envs.iter().position(|e| e.id == id)?;
    let mut env = st.eb.envs[i].clone();
    let out = f(&mut st.eb, &mut env);
    st.eb.envs[i] = env;
    Some(out)
}

fn note(shared: &Shared, id: &str, severity: &'static str, message: &str) {
    with_env(shared, id, |eb, e| eb.event(e, severity, message));
}

async fn launch(shared: Arc<Shared>, id: String) {
    note(&shared, &id, "INFO", "createEnvironment is starting.");
    tokio::time::sleep(shared.opts.step_delay).await;
    let bucket = format!(
        "elasticbeanstalk-{}-{}",
        shared.opts.region, shared.opts.account
    );
    note(
        &shared,
        &id,
        "INFO",
        &format!("Using {bucket} as Amazon S3 storage bucket for environment data."),
    );
    note(
        &shared,
        &id,
        "INFO",
        &format!("Created load balancer named: awseb-{id}-AWSEBLoa-LOCAL"),
    );
    let result = run_bundle(&shared, &id).await;
    if ended(&shared, &id).await {
        return;
    }
    let name = with_env(&shared, &id, |_, e| e.name.clone()).unwrap_or_default();
    let done = [
        "Instance deployment completed successfully.".to_string(),
        format!("Successfully launched environment: {name}"),
    ];
    finish(
        &shared,
        &id,
        result,
        &done,
        "Create environment operation is complete, but with errors. For more information, see troubleshooting documentation.",
    );
}

async fn update(shared: Arc<Shared>, id: String) {
    tokio::time::sleep(shared.opts.step_delay).await;
    // Past this point the update runs and can no longer be aborted; if it was aborted
    // meanwhile (back to Ready), there is nothing to do.
    let go_on = with_env(&shared, &id, |_, e| {
        e.status == "Updating" && e.previous.take().is_some()
    })
    .unwrap_or(false);
    if !go_on {
        return;
    }
    let result = run_bundle(&shared, &id).await;
    finish(
        &shared,
        &id,
        result,
        &["Environment update completed successfully.".to_string()],
        "Failed to deploy configuration.",
    );
}

/// Whether the environment was terminated while it launched: as on AWS it stays
/// terminated, and the container the launch started goes too.
async fn ended(shared: &Shared, id: &str) -> bool {
    let gone = with_env(shared, id, |_, e| {
        matches!(e.status, "Terminating" | "Terminated").then(|| e.container.take())
    })
    .flatten();
    match gone {
        None => false,
        Some(container) => {
            if let Some(c) = container {
                engine::remove(&c).await;
            }
            true
        }
    }
}

/// The end of a launch or an update: Ready, and Green with `done`'s events, or Red with the
/// problem and `failed`.
fn finish(
    shared: &Shared,
    id: &str,
    result: Result<(), (&'static str, String)>,
    done: &[String],
    failed: &str,
) {
    with_env(shared, id, |eb, e| {
        e.status = "Ready";
        e.updated = now_ms();
        match result {
            Ok(()) => {
                (e.health, e.health_status) = ("Green", "Ok");
                for m in done {
                    eb.event(e, "INFO", m.clone());
                }
            }
            Err((severity, message)) => {
                (e.health, e.health_status) = ("Red", "Severe");
                eb.event(e, severity, message);
                eb.event(e, "ERROR", failed);
            }
        }
    });
}

/// RestartAppServer: the instance's application restarts (its container here), then is
/// health-checked like a deployment.
async fn restart(shared: Arc<Shared>, id: String) {
    tokio::time::sleep(shared.opts.step_delay).await;
    let container = with_env(&shared, &id, |_, e| e.container.clone()).flatten();
    let result = match container {
        Some(c) => match engine::restart(&c).await {
            Ok(port) => {
                with_env(&shared, &id, |_, e| {
                    e.port = Some(port);
                    e.launched = now_ms();
                });
                health_wait(&shared, &id).await
            }
            Err(e) => Err(("ERROR", format!("Failed to restart the application: {e}"))),
        },
        None => Err((
            "ERROR",
            "The environment has no instance to restart.".into(),
        )),
    };
    finish(
        &shared,
        &id,
        result,
        &["restartAppServer completed successfully.".to_string()],
        "restartAppServer failed.",
    );
}

/// RequestEnvironmentInfo: the instance's log (`tail`: its last 100 lines; `bundle`: all
/// of it), stored in the environment's S3 bucket, retrievable by URL as on AWS.
async fn gather_info(shared: Arc<Shared>, e: Env, kind: String) {
    let Some(container) = e.container.clone() else {
        return;
    };
    let lines = if kind == "tail" { Some(100) } else { None };
    let text = engine::logs(&container, lines).await;
    let at = now_ms();
    let instance = e.instance();
    let bucket = format!(
        "elasticbeanstalk-{}-{}",
        shared.opts.region, shared.opts.account
    );
    let key = format!(
        "resources/environments/logs/{kind}/{}/{instance}/{at}.txt",
        e.id
    );
    let url = format!("{}/{bucket}/{key}", shared.endpoint);
    let mut st = shared.lock();
    st.bucket(&bucket)
        .insert(key, crate::s3::Object::new(text.into(), "text/plain"));
    st.eb
        .info
        .retain(|(env, k, ..)| !(env == &e.id && k == &kind));
    st.eb.info.push((e.id.clone(), kind, instance, at, url));
    st.eb
        .event(&e, "INFO", "requestEnvironmentInfo completed successfully.");
}

async fn terminate(shared: Arc<Shared>, id: String) {
    tokio::time::sleep(shared.opts.step_delay).await;
    let container = with_env(&shared, &id, |_, e| e.container.take()).flatten();
    if let Some(c) = container {
        engine::remove(&c).await;
    }
    with_env(&shared, &id, |eb, e| {
        (e.status, e.health, e.health_status) = ("Terminated", "Grey", "Suspended");
        e.port = None;
        e.updated = now_ms();
        eb.event(e, "INFO", "terminateEnvironment completed successfully.");
    });
}

/// Does what an instance does with the environment's version: reads the source bundle from
/// S3, pulls the image with the credentials it names, runs it with the environment's
/// properties and health-checks it. The new container replaces the old one either way.
async fn run_bundle(shared: &Arc<Shared>, id: &str) -> Result<(), (&'static str, String)> {
    let Some((env, bundle)) = ({
        let st = shared.lock();
        st.eb.envs.iter().find(|e| e.id == id).cloned().map(|env| {
            let v = st
                .eb
                .versions
                .iter()
                .find(|v| v.app == env.app && v.label == env.label);
            let bundle = v.map(|v| {
                (
                    format!("s3://{}/{}", v.bucket, v.key),
                    st.buckets
                        .get(&v.bucket)
                        .and_then(|b| b.get(&v.key))
                        .map(|o| o.data.clone()),
                )
            });
            (env, bundle)
        })
    }) else {
        return Err(("ERROR", "The environment disappeared.".into()));
    };
    let (url, bundle) = bundle.ok_or((
        "ERROR",
        format!("No application version {} found.", env.label),
    ))?;
    let bundle = bundle.ok_or((
        "ERROR",
        format!("Failed to download the source bundle {url}."),
    ))?;
    if bundle.starts_with(b"PK") {
        return Err((
            "ERROR",
            "This local Beanstalk reads a bare Dockerrun.aws.json source bundle, not a zip.".into(),
        ));
    }
    let run: serde_json::Value = serde_json::from_slice(&bundle)
        .map_err(|e| ("ERROR", format!("Invalid Dockerrun.aws.json: {e}")))?;
    if run["AWSEBDockerrunVersion"].as_str() != Some("1")
        && run["AWSEBDockerrunVersion"].as_u64() != Some(1)
    {
        return Err(("ERROR", "Dockerrun.aws.json: AWSEBDockerrunVersion must be 1 on the Docker platform (single container).".into()));
    }
    let image = run["Image"]["Name"]
        .as_str()
        .ok_or(("ERROR", "Dockerrun.aws.json has no Image.Name.".to_string()))?
        .to_string();
    let port_value = &run["Ports"][0]["ContainerPort"];
    let container_port: u16 = port_value
        .as_u64()
        .map(|p| p as u16)
        .or_else(|| port_value.as_str().and_then(|p| p.parse().ok()))
        .unwrap_or(80);
    let auth = match run.get("Authentication") {
        Some(a) => {
            let (bucket, key) = (
                a["Bucket"].as_str().unwrap_or_default(),
                a["Key"].as_str().unwrap_or_default(),
            );
            let data = shared
                .lock()
                .buckets
                .get(bucket)
                .and_then(|b| b.get(key))
                .map(|o| o.data.clone());
            Some(data.ok_or((
                "ERROR",
                format!("Failed to download authentication credentials {key} from {bucket}."),
            ))?)
        }
        None => None,
    };
    engine::pull(&image, auth.as_deref(), shared.ids.next())
        .await
        .map_err(|e| ("ERROR", format!("Failed to pull Docker image {image}: {e}")))?;
    let env_vars: Vec<(String, String)> = env
        .options
        .iter()
        .filter(|(ns, _, _)| ns == ENV_NAMESPACE)
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect();
    let generation = with_env(shared, id, |_, e| {
        e.generation += 1;
        e.generation
    })
    .unwrap_or(1);
    let name = format!("fake-eb-{id}-{generation}");
    let port = engine::run(shared, &env.app, &name, &image, &env_vars, container_port)
        .await
        .map_err(|e| ("ERROR", format!("Failed to run the Docker container: {e}")))?;
    let old = with_env(shared, id, |_, e| {
        e.port = Some(port);
        e.container.replace(name.clone())
    })
    .flatten();
    if let Some(old) = old {
        engine::remove(&old).await;
    }
    with_env(shared, id, |_, e| e.launched = now_ms());
    health_wait(shared, id).await
}

/// Health-checks an environment's container until it passes, exits, or the grace period
/// ends; records why it failed (the environment's `Causes`).
async fn health_wait(shared: &Arc<Shared>, id: &str) -> Result<(), (&'static str, String)> {
    let Some((check, name, port)) = with_env(shared, id, |_, e| {
        Some((HealthCheck::of(e), e.container.clone()?, e.port?))
    })
    .flatten() else {
        return Err(("ERROR", "The environment has no running instance.".into()));
    };
    let deadline = Instant::now() + shared.opts.health_grace;
    loop {
        if let Some(code) = engine::exited(&name).await {
            let logs = engine::logs_tail(&name).await;
            let cause = format!("The Docker container exited with code {code}.");
            with_env(shared, id, |_, e| e.causes = vec![cause.clone()]);
            return Err(("ERROR", format!("{cause} Last log lines: {logs}")));
        }
        let failed = check.probe(&name, port).await;
        let Some(why) = failed else {
            with_env(shared, id, |_, e| e.causes.clear());
            return Ok(());
        };
        if Instant::now() >= deadline {
            with_env(shared, id, |_, e| {
                e.causes = vec![format!(
                    "ELB health is failing or not available for all instances: {why}."
                )]
            });
            return Err((
                "WARN",
                format!(
                    "Environment health has transitioned from Pending to Severe. ELB health is failing or not available for all instances: {why}."
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How the load balancer (or, without one, the platform) checks an environment's
/// instance, from its options, following AWS's documented defaults:
/// - `aws:elasticbeanstalk:environment` `EnvironmentType` defaults to `LoadBalanced`, and
///   `LoadBalancerType` to `classic` (general options reference, "aws:elasticbeanstalk:environment").
/// - Classic: with no `Application Healthcheck URL` (`aws:elasticbeanstalk:application`),
///   "the load balancer attempts to make a TCP connection on port 80"; with one
///   (`/path` or `HTTP:80/path`), an HTTP GET where anything but "200 OK" is unhealthy
///   (ELB `HealthCheck.Target`).
/// - Application: the default process's `HealthCheckPath` (default `/`;
///   `Application Healthcheck URL` sets it too) and `MatcherHTTPCode` (default `200`)
///   (`aws:elasticbeanstalk:environment:process:default`).
/// - Network: a TCP connection (a Network Load Balancer's health check protocol).
/// - `SingleInstance`: no load balancer; the instance is healthy while its process runs.
#[derive(Clone, Debug, PartialEq)]
enum HealthCheck {
    Running,
    Tcp,
    Http {
        path: String,
        codes: Vec<(u16, u16)>,
    },
}

impl HealthCheck {
    fn of(e: &Env) -> HealthCheck {
        let opt = |ns: &str, key: &str| {
            e.options
                .iter()
                .rev()
                .find(|(n, k, _)| n == ns && k == key)
                .map(|(_, _, v)| v.trim().to_string())
        };
        let app_url = opt(
            "aws:elasticbeanstalk:application",
            "Application Healthcheck URL",
        )
        .filter(|v| !v.is_empty());
        // `HTTP:80/ping` or `/ping`: the path is what follows the first `/`.
        let url_path = |v: &str| v.find('/').map_or("/".to_string(), |i| v[i..].to_string());
        if opt("aws:elasticbeanstalk:environment", "EnvironmentType").as_deref()
            == Some("SingleInstance")
        {
            return HealthCheck::Running;
        }
        match opt("aws:elasticbeanstalk:environment", "LoadBalancerType")
            .as_deref()
            .unwrap_or("classic")
        {
            "application" => {
                let process = "aws:elasticbeanstalk:environment:process:default";
                let path = opt(process, "HealthCheckPath")
                    .or_else(|| app_url.as_deref().map(url_path))
                    .unwrap_or_else(|| "/".into());
                let codes = opt(process, "MatcherHTTPCode")
                    .map_or_else(|| vec![(200, 200)], |m| matcher(&m));
                HealthCheck::Http { path, codes }
            }
            "network" => HealthCheck::Tcp,
            _ => match app_url {
                Some(url) if url.to_ascii_uppercase().starts_with("TCP:") => HealthCheck::Tcp,
                Some(url) => HealthCheck::Http {
                    path: url_path(&url),
                    codes: vec![(200, 200)],
                },
                None => HealthCheck::Tcp,
            },
        }
    }

    /// Checks the container on its loopback port: None when healthy, else what failed, in
    /// the words of Beanstalk's health events.
    async fn probe(&self, container: &str, port: u16) -> Option<String> {
        if let Some(code) = engine::exited(container).await {
            return Some(format!("the process exited with code {code}"));
        }
        match self {
            HealthCheck::Running => None,
            HealthCheck::Tcp => (!engine::accepts(port).await)
                .then(|| "TCP connection to the instance failed".to_string()),
            HealthCheck::Http { path, codes } => match engine::health(port, path).await {
                Some(s) if codes.iter().any(|(lo, hi)| (*lo..=*hi).contains(&s)) => None,
                Some(s) => Some(format!("GET {path} answered {s}")),
                None => Some(format!("GET {path} did not answer")),
            },
        }
    }
}

/// `MatcherHTTPCode`: codes and ranges, `200,202` or `200-299`.
fn matcher(m: &str) -> Vec<(u16, u16)> {
    m.split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((lo, hi)) => Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)),
                None => part.parse().ok().map(|c| (c, c)),
            }
        })
        .collect()
}

/// Enhanced health, roughly: every second, each Ready environment's container is checked and
/// its health moves between Green and Red with an event, as the load balancer sees it.
pub async fn monitor(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ready: Vec<(String, String, u16, HealthCheck)> = {
            let st = shared.lock();
            st.eb
                .envs
                .iter()
                .filter(|e| e.status == "Ready")
                .filter_map(|e| {
                    Some((
                        e.id.clone(),
                        e.container.clone()?,
                        e.port?,
                        HealthCheck::of(e),
                    ))
                })
                .collect()
        };
        for (id, container, port, check) in ready {
            let failed = check.probe(&container, port).await;
            let ok = failed.is_none();
            with_env(&shared, &id, |eb, e| {
                if e.status != "Ready" || e.container.as_deref() != Some(container.as_str()) {
                    return;
                }
                match (ok, e.health) {
                    (true, "Red") => {
                        e.causes.clear();
                        (e.health, e.health_status) = ("Green", "Ok");
                        eb.event(
                            e,
                            "INFO",
                            "Environment health has transitioned from Severe to Ok.",
                        );
                    }
                    (false, "Green") => {
                        e.causes = vec![format!(
                            "ELB health is failing or not available for all instances: {}.",
                            failed.as_deref().unwrap_or("")
                        )];
                        (e.health, e.health_status) = ("Red", "Severe");
                        eb.event(e, "WARN", format!("Environment health has transitioned from Ok to Severe. ELB health is failing or not available for all instances: {}.", failed.as_deref().unwrap_or("")));
                    }
                    _ => {}
                }
            });
        }
    }
}
