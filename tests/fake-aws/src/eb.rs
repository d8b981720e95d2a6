//! Elastic Beanstalk's Query API (version 2010-12-01): the operations a blue/green deploy
//! uses, with AWS's XML shapes, error codes and lifecycle (Launching → Ready with health
//! Grey → Green or Red, Updating, Terminating → Terminated) and the events each step writes.
//!
//! Implemented: CreateApplication, DescribeApplications, CreateStorageLocation,
//! CreateApplicationVersion, DescribeApplicationVersions, CheckDNSAvailability,
//! CreateEnvironment, DescribeEnvironments, UpdateEnvironment (option settings and version),
//! SwapEnvironmentCNAMEs, TerminateEnvironment, DescribeEvents, DescribeConfigurationSettings
//! (of an environment), ListAvailableSolutionStacks. Anything else answers
//! `InvalidAction`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

struct AppVersion {
    app: String,
    label: String,
    bucket: String,
    key: String,
    description: String,
    created: i64,
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
}

struct Event {
    at: i64,
    app: String,
    env: Option<String>,
    label: Option<String>,
    severity: &'static str,
    message: String,
}

impl Beanstalk {
    /// The loopback port of the container behind a CNAME.
    pub fn backend_for(&self, cname: &str) -> Option<u16> {
        self.envs.iter().find(|e| e.status != "Terminated" && e.cname.eq_ignore_ascii_case(cname)).and_then(|e| e.port)
    }

    pub fn summary(&self, app: &str) -> Vec<(String, String, String, String)> {
        self.envs.iter().filter(|e| e.app == app).map(|e| (e.name.clone(), e.status.to_string(), e.health.to_string(), e.cname.clone())).collect()
    }

    pub fn options(&self, app: &str, env: &str) -> Vec<(String, String, String)> {
        self.envs.iter().rev().find(|e| e.app == app && e.name == env).map(|e| e.options.clone()).unwrap_or_default()
    }

    pub fn containers(&self) -> Vec<String> {
        self.envs.iter().filter(|e| e.status != "Terminated").filter_map(|e| e.container.clone()).collect()
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

    fn event(&mut self, env: &Env, severity: &'static str, message: impl Into<String>) {
        let at = now_ms().max(self.events.last().map_or(0, |e| e.at + 1));
        self.events.push(Event { at, app: env.app.clone(), env: Some(env.name.clone()), label: Some(env.label.clone()), severity, message: message.into() });
    }
}

/// The form parameters of a Query request.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn require(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k).ok_or_else(|| ApiError::new(400, "MissingParameter", format!("The request must contain the parameter {k}")))
    }

    /// `K.member.1`, `K.member.2`, … in order.
    fn list(&self, k: &str) -> Vec<String> {
        let prefix = format!("{k}.member.");
        let mut items: Vec<(u32, String)> =
            self.0.iter().filter_map(|(key, v)| key.strip_prefix(&prefix).and_then(|n| n.parse().ok()).map(|n| (n, v.clone()))).collect();
        items.sort();
        items.into_iter().map(|(_, v)| v).collect()
    }

    fn options(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for n in 1.. {
            let at = |f: &str| self.get(&format!("OptionSettings.member.{n}.{f}")).map(String::from);
            let (Some(ns), Some(name)) = (at("Namespace"), at("OptionName")) else { break };
            out.push((ns, name, at("Value").unwrap_or_default()));
        }
        out
    }
}

pub async fn handle(shared: &Arc<Shared>, body: &[u8]) -> Reply {
    let p = Params(form_urlencoded::parse(body).into_owned().collect());
    let action = p.get("Action").unwrap_or("").to_string();
    let fault = shared.lock().call(&action);
    let result = match fault {
        Some(e) => Err(e),
        None => dispatch(shared, &action, &p),
    };
    let request_id = shared.request_id();
    match result {
        Ok(inner) => {
            let mut x = Xml::default();
            x.0.push_str(&format!(r#"<{action}Response xmlns="{XMLNS}">"#));
            if let Some(inner) = inner {
                x.open(&format!("{action}Result"));
                x.0.push_str(&inner);
                x.close(&format!("{action}Result"));
            }
            x.open("ResponseMetadata").el("RequestId", &request_id).close("ResponseMetadata").close(&format!("{action}Response"));
            reply(200, "text/xml", x.0)
        }
        Err(e) => {
            let mut x = Xml::default();
            x.0.push_str(&format!(r#"<ErrorResponse xmlns="{XMLNS}">"#));
            let kind = if e.status >= 500 { "Receiver" } else { "Sender" };
            x.open("Error").el("Type", kind).el("Code", &e.code).el("Message", &e.message).close("Error");
            x.el("RequestId", &request_id).close("ErrorResponse");
            reply(e.status, "text/xml", x.0)
        }
    }
}

fn dispatch(shared: &Arc<Shared>, action: &str, p: &Params) -> Result<Option<String>, ApiError> {
    let o = &shared.opts;
    let mut x = Xml::default();
    let mut guard = shared.lock();
    let st = &mut *guard;
    let eb = &mut st.eb;
    match action {
        "CreateApplication" => {
            let name = p.require("ApplicationName")?;
            if eb.apps.contains_key(name) {
                return Err(ApiError::invalid(format!("Application {name} already exists.")));
            }
            let now = now_ms();
            eb.apps.insert(name.into(), now);
            x.open("Application");
            app_xml(&mut x, o, name, now, &[]);
            x.close("Application");
        }
        "DescribeApplications" => {
            let names = p.list("ApplicationNames");
            x.open("Applications");
            for (name, created) in eb.apps.iter().filter(|(n, _)| names.is_empty() || names.contains(n)) {
                let labels: Vec<&str> = eb.versions.iter().filter(|v| &v.app == name).map(|v| v.label.as_str()).collect();
                x.open("member");
                app_xml(&mut x, o, name, *created, &labels);
                x.close("member");
            }
            x.close("Applications");
        }
        "CreateStorageLocation" => {
            let bucket = format!("elasticbeanstalk-{}-{}", o.region, o.account);
            st.buckets.entry(bucket.clone()).or_default();
            x.el("S3Bucket", &bucket);
        }
        "CreateApplicationVersion" => {
            let app = p.require("ApplicationName")?;
            let label = p.require("VersionLabel")?;
            if !eb.apps.contains_key(app) {
                if p.get("AutoCreateApplication") == Some("true") {
                    eb.apps.insert(app.into(), now_ms());
                } else {
                    return Err(ApiError::invalid(format!("No Application named '{app}' found.")));
                }
            }
            if eb.versions.iter().any(|v| v.app == app && v.label == label) {
                return Err(ApiError::invalid(format!("Application Version {label} already exists.")));
            }
            let (bucket, key) = (p.require("SourceBundle.S3Bucket")?.to_string(), p.require("SourceBundle.S3Key")?.to_string());
            if st.buckets.get(&bucket).and_then(|b| b.get(&key)).is_none() {
                return Err(ApiError::new(
                    400,
                    "InvalidParameterCombination",
                    format!("Unable to download from S3 location (Bucket: {bucket} Key: {key}). Reason: Not Found"),
                ));
            }
            let v = AppVersion { app: app.into(), label: label.into(), bucket, key, description: p.get("Description").unwrap_or("").into(), created: now_ms() };
            x.open("ApplicationVersion");
            version_xml(&mut x, o, &v);
            x.close("ApplicationVersion");
            st.eb.versions.push(v);
        }
        "DescribeApplicationVersions" => {
            let labels = p.list("VersionLabels");
            let app = p.get("ApplicationName");
            x.open("ApplicationVersions");
            for v in eb.versions.iter().rev().filter(|v| app.is_none_or(|a| a == v.app) && (labels.is_empty() || labels.contains(&v.label))) {
                x.open("member");
                version_xml(&mut x, o, v);
                x.close("member");
            }
            x.close("ApplicationVersions");
        }
        "ListAvailableSolutionStacks" => {
            x.open("SolutionStacks");
            for s in SOLUTION_STACKS {
                x.el("member", s);
            }
            x.close("SolutionStacks");
        }
        "DescribeConfigurationSettings" => {
            let app = p.require("ApplicationName")?;
            let name = p.get("EnvironmentName").ok_or_else(|| ApiError::invalid("This local Beanstalk describes environments' settings, not templates: give EnvironmentName."))?;
            let e = eb.live().find(|e| e.app == app && e.name == name).ok_or_else(|| ApiError::invalid(format!("No Environment found for EnvironmentName = '{name}'.")))?;
            x.open("ConfigurationSettings").open("member");
            x.opt("SolutionStackName", e.stack.as_deref()).opt("PlatformArn", e.platform.as_deref());
            x.el("ApplicationName", &e.app).el("EnvironmentName", &e.name).el("DeploymentStatus", "deployed");
            x.el("DateCreated", &iso(e.created)).el("DateUpdated", &iso(e.updated)).open("OptionSettings");
            for (ns, k, v) in &e.options {
                x.open("member").el("Namespace", ns).el("OptionName", k).el("Value", v).close("member");
            }
            x.close("OptionSettings").close("member").close("ConfigurationSettings");
        }
        "CheckDNSAvailability" => {
            let prefix = p.require("CNAMEPrefix")?;
            let cname = cname_of(o, prefix);
            x.el("Available", if eb.live().any(|e| e.cname == cname) { "false" } else { "true" }).el("FullyQualifiedCNAME", &cname);
        }
        "CreateEnvironment" => {
            let env = create_environment(shared, eb, p)?;
            env_xml(&mut x, o, &env);
            let shared = shared.clone();
            tokio::spawn(async move { launch(shared, env.id).await });
        }
        "DescribeEnvironments" => {
            let (names, ids) = (p.list("EnvironmentNames"), p.list("EnvironmentIds"));
            let app = p.get("ApplicationName");
            let label = p.get("VersionLabel");
            let include_deleted = p.get("IncludeDeleted") != Some("false");
            let since = p.get("IncludedDeletedBackTo").and_then(parse_iso).unwrap_or(0);
            x.open("Environments");
            for e in eb.envs.iter().filter(|e| {
                app.is_none_or(|a| a == e.app)
                    && label.is_none_or(|l| l == e.label)
                    && (names.is_empty() || names.contains(&e.name))
                    && (ids.is_empty() || ids.contains(&e.id))
                    && (e.status != "Terminated" || (include_deleted && e.updated >= since))
            }) {
                x.open("member");
                env_xml(&mut x, o, e);
                x.close("member");
            }
            x.close("Environments");
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
                && !eb.versions.iter().any(|v| v.app == e.app && &v.label == l) {
                    return Err(ApiError::invalid(format!("No Application Version named '{l}' found.")));
                }
            let e = eb.env_mut(&id).expect("found above");
            for (ns, name, value) in options {
                e.options.retain(|(n, k, _)| !(n == &ns && k == &name));
                e.options.push((ns, name, value));
            }
            // OptionsToRemove: back to the default, which here is the option not being set.
            for n in 1.. {
                let at = |f: &str| p.get(&format!("OptionsToRemove.member.{n}.{f}")).map(String::from);
                let (Some(ns), Some(name)) = (at("Namespace"), at("OptionName")) else { break };
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
                return Err(ApiError::invalid("The source and destination environments must differ."));
            }
            let ca = eb.env_mut(&a).expect("found").cname.clone();
            let cb = std::mem::replace(&mut eb.env_mut(&b).expect("found").cname, ca);
            eb.env_mut(&a).expect("found").cname = cb;
            let name = |id: &str| eb.envs.iter().find(|e| e.id == id).map(|e| e.name.clone()).unwrap_or_default();
            let names = format!("'{}' and '{}'", name(&a), name(&b));
            for id in [&a, &b] {
                eb.transition(id, "Updating", format!("Swapping CNAMEs for environments {names}."));
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(shared.opts.step_delay).await;
                let mut st = shared.lock();
                for id in [&a, &b] {
                    if st.eb.env_mut(id).is_some_and(|e| e.status == "Updating") {
                        st.eb.transition(id, "Ready", format!("Completed swapping CNAMEs for environments {names}."));
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
            let e = eb.transition(&id, "Terminating", "terminateEnvironment is starting.");
            env_xml(&mut x, o, &e);
            let shared = shared.clone();
            tokio::spawn(async move { terminate(shared, e.id).await });
        }
        "DescribeEvents" => {
            let app = p.get("ApplicationName");
            let env = p.get("EnvironmentName");
            let env_id = p.get("EnvironmentId").and_then(|id| eb.envs.iter().find(|e| e.id == id)).map(|e| e.name.clone());
            let start = p.get("StartTime").and_then(parse_iso).unwrap_or(0);
            let end = p.get("EndTime").and_then(parse_iso).unwrap_or(i64::MAX);
            let min = severity_rank(p.get("Severity").unwrap_or("TRACE"));
            // MaxRecords is 1 to 1000 (AWS's limits); NextToken, opaque to clients, is where
            // the page before stopped, so paginators go through every event.
            let max: usize = match p.get("MaxRecords").map(|m| m.parse::<usize>()) {
                None => 1000,
                Some(Ok(m)) if (1..=1000).contains(&m) => m,
                Some(_) => {
                    return Err(ApiError::new(
                        400,
                        "ValidationError",
                        format!("1 validation error detected: Value '{}' at 'maxRecords' failed to satisfy constraint: Member must have value between 1 and 1000", p.get("MaxRecords").unwrap_or_default()),
                    ));
                }
            };
            let skip: usize = match p.get("NextToken") {
                None => 0,
                Some(t) => t.strip_prefix("pym-events-").and_then(|n| n.parse().ok()).ok_or_else(|| ApiError::invalid(format!("Invalid NextToken: {t}")))?,
            };
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
            x.open("Events");
            for ev in matching.iter().skip(skip).take(max) {
                x.open("member").el("EventDate", &iso(ev.at)).el("Message", &ev.message).el("ApplicationName", &ev.app);
                x.opt("EnvironmentName", ev.env.as_deref()).opt("VersionLabel", ev.label.as_deref()).el("Severity", ev.severity).close("member");
            }
            x.close("Events");
            if matching.len() > skip + max {
                x.el("NextToken", &format!("pym-events-{}", skip + max));
            }
        }
        "" => return Err(ApiError::new(400, "MissingAction", "The request must contain the parameter Action.")),
        other => return Err(ApiError::new(400, "InvalidAction", format!("The action {other} is not valid for this web service (or this local Beanstalk does not implement it)."))),
    }
    Ok(Some(x.0))
}

fn create_environment(shared: &Shared, eb: &mut Beanstalk, p: &Params) -> Result<Env, ApiError> {
    let o = &shared.opts;
    let app = p.require("ApplicationName")?;
    let name = p.require("EnvironmentName")?;
    if !eb.apps.contains_key(app) {
        return Err(ApiError::invalid(format!("No Application named '{app}' found.")));
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
        return Err(ApiError::invalid(format!("Environment {name} already exists.")));
    }
    let label = p.require("VersionLabel")?;
    if !eb.versions.iter().any(|v| v.app == app && v.label == label) {
        return Err(ApiError::invalid(format!("No Application Version named '{label}' found.")));
    }
    let (stack, platform) = (p.get("SolutionStackName").map(String::from), p.get("PlatformArn").map(String::from));
    match (&stack, &platform) {
        (None, None) => return Err(ApiError::invalid("Either SolutionStackName, PlatformArn or TemplateName must be specified.")),
        (Some(s), _) if !s.contains("Docker") => return Err(ApiError::invalid(format!("No Solution Stack named '{s}' found."))),
        (_, Some(a)) if !a.contains("Docker") => return Err(ApiError::invalid(format!("No Platform named '{a}' found."))),
        _ => {}
    }
    let prefix = p.get("CNAMEPrefix").map(String::from).unwrap_or_else(|| format!("{name}-{}", shared.next_id()));
    let cname = cname_of(o, &prefix);
    if eb.live().any(|e| e.cname == cname) {
        return Err(ApiError::invalid(format!("DNS name ({cname}) is not available.")));
    }
    let now = now_ms();
    let env = Env {
        id: format!("e-{:010x}", shared.next_id() * 7919 + 1_000_003),
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
    };
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
            (Some(n), _) => ApiError::invalid(format!("No Environment found for EnvironmentName = '{n}'.")),
            (_, Some(i)) => ApiError::invalid(format!("No Environment found for EnvironmentId = '{i}'.")),
            _ => ApiError::new(400, "MissingParameter", format!("The request must contain {prefix}Name or {prefix}Id")),
        })
}

fn not_ready(name: &str) -> ApiError {
    ApiError::invalid(format!("Environment named {name} is in an invalid state for this operation. Must be Ready."))
}

fn cname_of(o: &crate::Options, prefix: &str) -> String {
    format!("{}.{}.elasticbeanstalk.localhost", prefix.to_ascii_lowercase(), o.region)
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
    x.el("ApplicationArn", &format!("arn:aws:elasticbeanstalk:{}:{}:application/{name}", o.region, o.account));
    x.el("ApplicationName", name).el("DateCreated", &iso(created)).el("DateUpdated", &iso(created));
    x.open("Versions");
    for l in labels {
        x.el("member", l);
    }
    x.close("Versions").open("ConfigurationTemplates").close("ConfigurationTemplates");
}

fn version_xml(x: &mut Xml, o: &crate::Options, v: &AppVersion) {
    x.el("ApplicationVersionArn", &format!("arn:aws:elasticbeanstalk:{}:{}:applicationversion/{}/{}", o.region, o.account, v.app, v.label));
    x.el("ApplicationName", &v.app).el("Description", &v.description).el("VersionLabel", &v.label);
    x.open("SourceBundle").el("S3Bucket", &v.bucket).el("S3Key", &v.key).close("SourceBundle");
    x.el("DateCreated", &iso(v.created)).el("DateUpdated", &iso(v.created)).el("Status", "PROCESSED");
}

fn env_xml(x: &mut Xml, o: &crate::Options, e: &Env) {
    x.el("EnvironmentName", &e.name).el("EnvironmentId", &e.id).el("ApplicationName", &e.app).el("VersionLabel", &e.label).opt("Description", e.description.as_deref());
    x.opt("SolutionStackName", e.stack.as_deref()).opt("PlatformArn", e.platform.as_deref());
    x.el("EndpointURL", &format!("awseb-{}-AWSEBLoa-LOCAL.{}.elb.localhost", e.id, o.region)).el("CNAME", &e.cname);
    x.el("DateCreated", &iso(e.created)).el("DateUpdated", &iso(e.updated)).el("Status", e.status);
    x.el("AbortableOperationInProgress", "false").el("Health", e.health).el("HealthStatus", e.health_status);
    x.open("Tier").el("Name", "WebServer").el("Type", "Standard").el("Version", "1.0").close("Tier");
    x.el("EnvironmentArn", &format!("arn:aws:elasticbeanstalk:{}:{}:environment/{}/{}", o.region, o.account, e.app, e.name));
}

fn with_env<T>(shared: &Shared, id: &str, f: impl FnOnce(&mut Beanstalk, &mut Env) -> T) -> Option<T> {
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
    let bucket = format!("elasticbeanstalk-{}-{}", shared.opts.region, shared.opts.account);
    note(&shared, &id, "INFO", &format!("Using {bucket} as Amazon S3 storage bucket for environment data."));
    note(&shared, &id, "INFO", &format!("Created load balancer named: awseb-{id}-AWSEBLoa-LOCAL"));
    let result = run_bundle(&shared, &id).await;
    let name = with_env(&shared, &id, |_, e| e.name.clone()).unwrap_or_default();
    let done = ["Instance deployment completed successfully.".to_string(), format!("Successfully launched environment: {name}")];
    finish(&shared, &id, result, &done, "Create environment operation is complete, but with errors. For more information, see troubleshooting documentation.");
}

async fn update(shared: Arc<Shared>, id: String) {
    tokio::time::sleep(shared.opts.step_delay).await;
    let result = run_bundle(&shared, &id).await;
    finish(&shared, &id, result, &["Environment update completed successfully.".to_string()], "Failed to deploy configuration.");
}

/// The end of a launch or an update: Ready, and Green with `done`'s events, or Red with the
/// problem and `failed`.
fn finish(shared: &Shared, id: &str, result: Result<(), (&'static str, String)>, done: &[String], failed: &str) {
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
            let v = st.eb.versions.iter().find(|v| v.app == env.app && v.label == env.label);
            let bundle = v.map(|v| (format!("s3://{}/{}", v.bucket, v.key), st.buckets.get(&v.bucket).and_then(|b| b.get(&v.key)).map(|o| o.data.clone())));
            (env, bundle)
        })
    }) else {
        return Err(("ERROR", "The environment disappeared.".into()));
    };
    let (url, bundle) = bundle.ok_or(("ERROR", format!("No application version {} found.", env.label)))?;
    let bundle = bundle.ok_or(("ERROR", format!("Failed to download the source bundle {url}.")))?;
    if bundle.starts_with(b"PK") {
        return Err(("ERROR", "This local Beanstalk reads a bare Dockerrun.aws.json source bundle, not a zip.".into()));
    }
    let run: serde_json::Value = serde_json::from_slice(&bundle).map_err(|e| ("ERROR", format!("Invalid Dockerrun.aws.json: {e}")))?;
    if run["AWSEBDockerrunVersion"].as_str() != Some("1") && run["AWSEBDockerrunVersion"].as_u64() != Some(1) {
        return Err(("ERROR", "Dockerrun.aws.json: AWSEBDockerrunVersion must be 1 on the Docker platform (single container).".into()));
    }
    let image = run["Image"]["Name"].as_str().ok_or(("ERROR", "Dockerrun.aws.json has no Image.Name.".to_string()))?.to_string();
    let port_value = &run["Ports"][0]["ContainerPort"];
    let container_port: u16 = port_value.as_u64().map(|p| p as u16).or_else(|| port_value.as_str().and_then(|p| p.parse().ok())).unwrap_or(80);
    let auth = match run.get("Authentication") {
        Some(a) => {
            let (bucket, key) = (a["Bucket"].as_str().unwrap_or_default(), a["Key"].as_str().unwrap_or_default());
            let data = shared.lock().buckets.get(bucket).and_then(|b| b.get(key)).map(|o| o.data.clone());
            Some(data.ok_or(("ERROR", format!("Failed to download authentication credentials {key} from {bucket}.")))?)
        }
        None => None,
    };
    engine::pull(&image, auth.as_deref(), shared.next_id()).await.map_err(|e| ("ERROR", format!("Failed to pull Docker image {image}: {e}")))?;
    let env_vars: Vec<(String, String)> = env.options.iter().filter(|(ns, _, _)| ns == ENV_NAMESPACE).map(|(_, k, v)| (k.clone(), v.clone())).collect();
    let health_path = health_path(&env);
    let generation = with_env(shared, id, |_, e| {
        e.generation += 1;
        e.generation
    })
    .unwrap_or(1);
    let name = format!("fake-eb-{id}-{generation}");
    let port = engine::run(shared, &env.app, &name, &image, &env_vars, container_port).await.map_err(|e| ("ERROR", format!("Failed to run the Docker container: {e}")))?;
    let old = with_env(shared, id, |_, e| {
        e.port = Some(port);
        e.container.replace(name.clone())
    })
    .flatten();
    if let Some(old) = old {
        engine::remove(&old).await;
    }
    let deadline = Instant::now() + shared.opts.health_grace;
    let mut last = "did not answer".to_string();
    loop {
        if let Some(code) = engine::exited(&name).await {
            let logs = engine::logs_tail(&name).await;
            return Err(("ERROR", format!("The Docker container exited with code {code}. Last log lines: {logs}")));
        }
        match engine::health(port, &health_path).await {
            Some(s) if (200..400).contains(&s) => return Ok(()),
            Some(s) => last = format!("answered {s}"),
            None => {}
        }
        if Instant::now() >= deadline {
            return Err((
                "WARN",
                format!("Environment health has transitioned from Pending to Severe. ELB health is failing or not available for all instances: GET {health_path} {last}."),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The path of the environment's `Application Healthcheck URL` (`/ping` or `HTTP:80/ping`).
fn health_path(e: &Env) -> String {
    e.options
        .iter()
        .find(|(ns, k, _)| ns == "aws:elasticbeanstalk:application" && k == "Application Healthcheck URL")
        .map(|(_, _, v)| v.find('/').map_or("/".to_string(), |i| v[i..].to_string()))
        .unwrap_or_else(|| "/".into())
}

/// Enhanced health, roughly: every second, each Ready environment's container is checked and
/// its health moves between Green and Red with an event, as the load balancer sees it.
pub async fn monitor(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ready: Vec<(String, String, u16, String)> = {
            let st = shared.lock();
            st.eb
                .envs
                .iter()
                .filter(|e| e.status == "Ready")
                .filter_map(|e| Some((e.id.clone(), e.container.clone()?, e.port?, health_path(e))))
                .collect()
        };
        for (id, container, port, path) in ready {
            let ok = engine::exited(&container).await.is_none() && engine::health(port, &path).await.is_some_and(|s| (200..400).contains(&s));
            with_env(&shared, &id, |eb, e| {
                if e.status != "Ready" || e.container.as_deref() != Some(container.as_str()) {
                    return;
                }
                match (ok, e.health) {
                    (true, "Red") => {
                        (e.health, e.health_status) = ("Green", "Ok");
                        eb.event(e, "INFO", "Environment health has transitioned from Severe to Ok.");
                    }
                    (false, "Green") => {
                        (e.health, e.health_status) = ("Red", "Severe");
                        eb.event(e, "WARN", format!("Environment health has transitioned from Ok to Severe. ELB health is failing or not available for all instances: GET {path}."));
                    }
                    _ => {}
                }
            });
        }
    }
}
