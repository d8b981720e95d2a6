//! The aws-beanstalk target, driven through the generated xtask (which enables the
//! `aws-beanstalk` feature) and the official AWS SDK, against the local Elastic Beanstalk
//! and S3 of `tests/fake-aws`. Environments run as real containers; their CNAMEs
//! (`*.elasticbeanstalk.localhost`) reach them through the server's load balancer, on a
//! free port each (`aws_cname_port`), not AWS's 80, so two test runs never share one.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use pym_fake_aws::{FakeAws, Options};

use crate::support::{Registry, Run, TestService, http_get_at, need_engine};

const SECRET_KEY: &str = "pym-it-aws-secret-Kq3v9";
const SERVICE_TOKEN: &str = "pym-it-service-token-7Hw2";

/// The local Beanstalk shared by the tests of this process (each cleans up its own
/// application's containers), its load balancer on a free port rather than AWS's 80, so
/// two test runs on one machine each have their own.
fn shared_fake() -> &'static FakeAws {
    static FAKE: OnceLock<FakeAws> = OnceLock::new();
    FAKE.get_or_init(|| {
        FakeAws::start(Options {
            lb_port: Some(crate::support::free_port()),
            health_grace: Duration::from_secs(8),
            ..Default::default()
        })
        .expect("the local Beanstalk starts")
    })
}

/// A local Beanstalk of its own, its load balancer on a free port (README's way to try it
/// without root), each transition taking `step_delay`; and that port.
fn own_fake(step_delay: Duration) -> (FakeAws, u16) {
    let lb = crate::support::free_port();
    let fake = FakeAws::start(Options {
        lb_port: Some(lb),
        health_grace: Duration::from_secs(8),
        step_delay,
        ..Default::default()
    })
    .expect("the local Beanstalk starts");
    (fake, lb)
}

/// What points the SDK at a local Beanstalk, with test credentials and no profile files.
fn aws_env(fake: &FakeAws) -> [(&'static str, &str); 6] {
    [
        ("AWS_ENDPOINT_URL", fake.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDPYMDEPLOYTEST"),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/pym-it/config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/pym-it/credentials",
        ),
    ]
}

/// A service on the aws-beanstalk target, its registry, and the environment that points
/// the SDK at a local Beanstalk.
struct Setup<'a> {
    fake: &'a FakeAws,
    svc: TestService,
    reg: Registry,
    env: Vec<(String, String)>,
}

impl<'a> Setup<'a> {
    fn new(tag: &str, fake: &'a FakeAws) -> Setup<'a> {
        let reg = Registry::start();
        let svc = TestService::new_for(tag, "aws-beanstalk");
        // The registry credentials Beanstalk pulls with, where docker_bucket names them.
        let key = format!("{}/docker.cfg", svc.name);
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", reg.user, reg.password));
        fake.put_object(
            "pym-it-registry-auth",
            &key,
            serde_json::json!({ "auths": { reg.host.clone(): { "auth": auth } } }).to_string(),
        );
        svc.edit(
            "pym-config.yaml",
            "# docker_repo: registry.example.com/team",
            &format!(
                "docker_repo: {}/team\naws_region: us-east-1\ndocker_bucket: pym-it-registry-auth\ndocker_auth_key: {key}\nkeep_previous: 1\naws_timeout: 120\naws_cname_port: {}",
                reg.host,
                fake.lb_port.expect("a local Beanstalk with a load balancer")
            ),
        )
        .commit("deploy to the local Beanstalk");
        let env: Vec<(String, String)> = aws_env(fake)
            .iter()
            .chain(&[("PYM_IT_TOKEN", SERVICE_TOKEN)])
            .chain(&reg.env())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Setup {
            fake,
            svc,
            reg,
            env,
        }
    }

    fn xtask(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = self.svc.xtask_env(args, &env);
        r.assert_hides(&[SECRET_KEY, SERVICE_TOKEN, &self.reg.password]);
        r
    }

    /// `pymdeploy ARGS` with `extra` environment beside the AWS and registry one.
    fn pym(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
            .collect();
        let r = self.svc.pym_env(args, &env);
        r.assert_hides(&[SECRET_KEY, SERVICE_TOKEN, &self.reg.password]);
        r
    }

    /// `pymdeploy ARGS` in the background, to press Ctrl-C mid-way.
    fn spawn(&self, args: &[&str]) -> crate::support::Spawned {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.svc.spawn(args, &env)
    }

    /// A new commit, so a new version: a comment added to the service.
    fn next(&self, message: &str) -> String {
        let main = self.svc.read("src/main.rs");
        self.svc
            .write("src/main.rs", &format!("{main}// {message}\n"))
            .commit(message);
        self.version()
    }

    /// The environments not terminated: (name, status, health, CNAME).
    fn standing(&self) -> Vec<(String, String, String, String)> {
        let mut all: Vec<_> = self
            .fake
            .environments(&self.svc.name)
            .into_iter()
            .filter(|(_, s, ..)| s != "Terminated")
            .collect();
        all.sort();
        all
    }

    /// The `PYM_ENV` an environment is configured with.
    fn pym_env_of(&self, env: &str) -> Option<String> {
        self.fake
            .options(&self.svc.name, env)
            .into_iter()
            .find(|(ns, name, _)| {
                ns == "aws:elasticbeanstalk:application:environment" && name == "PYM_ENV"
            })
            .map(|(.., v)| v)
    }

    /// Waits until `env` is in `status` (and `health`, when given).
    fn wait_until(&self, env: &str, status: &str, health: Option<&str>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (s, h, _) = self.state(env);
            if s == status && health.is_none_or(|want| h == want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{env} is {s}, {h}, not {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn version(&self) -> String {
        self.svc
            .pym(&["version"])
            .assert_ok()
            .stdout
            .trim()
            .to_string()
    }

    fn env_of(&self, version: &str) -> String {
        format!("{}-{version}", self.svc.name)
    }

    /// The environment the first promote creates on the live CNAME (Beanstalk names are
    /// at most 40 characters: the service name gives way, as `env_name` does).
    fn live_env_of(&self, version: &str) -> String {
        let suffix = format!("{version}-live");
        let name: String = self.svc.name.chars().take(40 - suffix.len() - 1).collect();
        format!("{}-{suffix}", name.trim_end_matches('-'))
    }

    fn live_host(&self) -> String {
        format!(
            "{}-live.us-east-1.elasticbeanstalk.localhost",
            self.svc.name
        )
    }

    /// (status, health, CNAME) of an environment in the local Beanstalk.
    fn state(&self, env: &str) -> (String, String, String) {
        let all = self.fake.environments(&self.svc.name);
        let (_, s, h, c) = all
            .into_iter()
            .rev()
            .find(|(n, ..)| n == env)
            .unwrap_or_else(|| panic!("no environment {env}"));
        (s, h, c)
    }
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        self.fake.remove_app(&self.svc.name);
    }
}

/// The official SDK's Beanstalk client, pointed at a local Beanstalk.
#[cfg(feature = "aws-beanstalk")]
fn eb_client(fake: &FakeAws, rt: &tokio::runtime::Runtime) -> aws_sdk_elasticbeanstalk::Client {
    let creds = aws_sdk_elasticbeanstalk::config::Credentials::new(
        "AKIDPYMDEPLOYTEST",
        SECRET_KEY,
        None,
        None,
        "test",
    );
    let conf = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&fake.endpoint)
            .load(),
    );
    aws_sdk_elasticbeanstalk::Client::new(&conf)
}

/// What a user looking at the application with the SDK does: events a page at a time,
/// a bad MaxRecords, an update removing an option and setting a description.
#[cfg(feature = "aws-beanstalk")]
fn sdk_looks_at(fake: &FakeAws, app: &str, env: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let eb = eb_client(fake, &rt);
    rt.block_on(async {
        let all = eb
            .describe_events()
            .application_name(app)
            .send()
            .await
            .unwrap()
            .events()
            .len();
        let pages: Vec<_> = eb
            .describe_events()
            .application_name(app)
            .max_records(2)
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        let paged: usize = pages
            .iter()
            .map(|p| p.as_ref().unwrap().events().len())
            .sum();
        assert!(
            all > 4 && paged == all && pages.len() == all.div_ceil(2),
            "{all} events, {paged} through {} pages of 2",
            pages.len()
        );
        // DescribeEnvironments and DescribeApplicationVersions page too, when asked to.
        let (mut seen, mut token, mut calls) = (Vec::new(), None::<String>, 0);
        loop {
            let out = eb
                .describe_environments()
                .application_name(app)
                .max_records(1)
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            seen.extend(
                out.environments()
                    .iter()
                    .filter_map(|e| e.environment_name().map(String::from)),
            );
            calls += 1;
            token = out.next_token().map(String::from);
            if token.is_none() {
                break;
            }
        }
        let whole = eb
            .describe_environments()
            .application_name(app)
            .send()
            .await
            .unwrap();
        assert_eq!(
            seen.len(),
            whole.environments().len(),
            "pages of 1 missed environments"
        );
        assert!(
            calls == seen.len() && calls > 1,
            "{calls} calls for {} environments",
            seen.len()
        );
        let versions = eb
            .describe_application_versions()
            .application_name(app)
            .max_records(1)
            .send()
            .await
            .unwrap();
        assert!(
            versions.application_versions().len() == 1 && versions.next_token().is_some(),
            "{versions:?}"
        );
        let zero = eb
            .describe_events()
            .max_records(0)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            zero.as_service_error()
                .and_then(aws_sdk_elasticbeanstalk::error::ProvideErrorMetadata::code),
            Some("ValidationError")
        );
        let removed = aws_sdk_elasticbeanstalk::types::OptionSpecification::builder()
            .namespace("aws:elasticbeanstalk:environment")
            .option_name("LoadBalancerType")
            .build();
        eb.update_environment()
            .environment_name(env)
            .options_to_remove(removed)
            .description("kept for a look")
            .send()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = eb
                .describe_environments()
                .environment_names(env)
                .send()
                .await
                .unwrap();
            let e = &out.environments()[0];
            if e.status().map(|s| s.as_str()) == Some("Ready") {
                assert_eq!(e.description(), Some("kept for a look"));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{env} never got Ready after the update"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let settings = eb
            .describe_configuration_settings()
            .application_name(app)
            .environment_name(env)
            .send()
            .await
            .unwrap();
        let options = settings.configuration_settings()[0].option_settings();
        // Removed, the option is back to its default (pymdeploy sets `application`).
        let lb_type = options
            .iter()
            .find(|o| o.option_name() == Some("LoadBalancerType"))
            .and_then(|o| o.value());
        assert_eq!(lb_type, Some("classic"), "OptionsToRemove was ignored");
        assert!(
            options.iter().any(|o| o.option_name() == Some("PYM_ENV")),
            "the other options went too"
        );
    });
}

/// Waits until an environment is Ready; returns its description.
#[cfg(feature = "aws-beanstalk")]
async fn ready(
    eb: &aws_sdk_elasticbeanstalk::Client,
    env: &str,
) -> aws_sdk_elasticbeanstalk::types::EnvironmentDescription {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = eb
            .describe_environments()
            .environment_names(env)
            .include_deleted(false)
            .send()
            .await
            .unwrap();
        if let Some(e) = out
            .environments()
            .iter()
            .find(|e| e.status().map(|s| s.as_str()) == Some("Ready"))
        {
            return e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{env} never got Ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a user diagnosing an environment reaches for, through the SDK, and how the local
/// Beanstalk checks health by default for each load balancer type (the service answers
/// 200 on /ping and 404 on /).
#[cfg(feature = "aws-beanstalk")]
fn sdk_diagnoses(fake: &FakeAws, app: &str, env: &str) {
    use aws_sdk_elasticbeanstalk::error::ProvideErrorMetadata;
    use aws_sdk_elasticbeanstalk::operation::RequestId;
    use aws_sdk_elasticbeanstalk::types::{
        ConfigurationOptionSetting, EnvironmentHealthAttribute, EnvironmentInfoType, Tag,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let eb = eb_client(fake, &rt);
    let code = |e: &dyn ProvideErrorMetadata| e.code().map(String::from);
    rt.block_on(async {
        // The description: platform ARN beside the stack, the load balancer, HealthStatus
        // (pymdeploy turns enhanced health on); the version is UNPROCESSED (no Process).
        let e = ready(&eb, env).await;
        assert!(
            e.platform_arn()
                .is_some_and(|a| a.contains(":platform/Docker running on")),
            "{:?}",
            e.platform_arn()
        );
        assert!(
            e.resources()
                .and_then(|r| r.load_balancer())
                .and_then(|l| l.load_balancer_name())
                .is_some(),
            "{:?}",
            e.resources()
        );
        assert_eq!(e.health_status().map(|h| h.as_str()), Some("Ok"));
        let label = e.version_label().unwrap().to_string();
        let versions = eb
            .describe_application_versions()
            .application_name(app)
            .version_labels(&label)
            .send()
            .await
            .unwrap();
        let version = &versions.application_versions()[0];
        assert_eq!(version.status().map(|s| s.as_str()), Some("UNPROCESSED"));
        // With Process, the bundle is validated (PROCESSED); a version no environment
        // runs can be deleted.
        let spare = format!("{label}-spare");
        let created = eb
            .create_application_version()
            .application_name(app)
            .version_label(&spare)
            .set_source_bundle(version.source_bundle().cloned())
            .process(true)
            .send()
            .await
            .unwrap();
        assert_eq!(
            created
                .application_version()
                .and_then(|v| v.status())
                .map(|s| s.as_str()),
            Some("PROCESSED")
        );
        eb.delete_application_version()
            .application_name(app)
            .version_label(&spare)
            .send()
            .await
            .unwrap();
        assert!(
            eb.describe_application_versions()
                .application_name(app)
                .version_labels(&spare)
                .send()
                .await
                .unwrap()
                .application_versions()
                .is_empty(),
            "{spare} is still there"
        );

        // The effective configuration, defaults included; a template that does not exist.
        let settings = eb
            .describe_configuration_settings()
            .application_name(app)
            .environment_name(env)
            .send()
            .await
            .unwrap();
        let options = settings.configuration_settings()[0].option_settings();
        let value = |ns: &str, k: &str| {
            options
                .iter()
                .find(|o| o.namespace() == Some(ns) && o.option_name() == Some(k))
                .and_then(|o| o.value())
                .map(String::from)
        };
        assert_eq!(
            value("aws:elasticbeanstalk:command", "Timeout").as_deref(),
            Some("600"),
            "a default is missing"
        );
        assert_eq!(
            value(
                "aws:elasticbeanstalk:application",
                "Application Healthcheck URL"
            )
            .as_deref(),
            Some("/ping"),
            "a set option is not in its place"
        );
        // What `eb config` shows: every option of a load-balanced environment, those of
        // its load balancer's type and none of the other's.
        assert!(options.len() >= 100, "{} settings", options.len());
        assert_eq!(
            value("aws:ec2:instances", "InstanceTypes").as_deref(),
            Some("t3.micro, t3.small")
        );
        let balancer = value("aws:elasticbeanstalk:environment", "LoadBalancerType");
        let (own, other) = match balancer.as_deref() {
            Some("classic") => (("aws:elb:listener", "ListenerProtocol"), "aws:elbv2:"),
            _ => (("aws:elbv2:listener:default", "Protocol"), "aws:elb:"),
        };
        assert_eq!(value(own.0, own.1).as_deref(), Some("HTTP"), "{balancer:?}");
        assert!(
            !options
                .iter()
                .any(|o| o.namespace().is_some_and(|n| n.starts_with(other))),
            "an option of {other} on an environment behind a {balancer:?} load balancer"
        );
        let template = eb
            .describe_configuration_settings()
            .application_name(app)
            .template_name("no-such-template")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            template.as_service_error().and_then(|e| code(e)).as_deref(),
            Some("InvalidParameterValue")
        );

        // Resources, tags.
        let resources = eb
            .describe_environment_resources()
            .environment_name(env)
            .send()
            .await
            .unwrap();
        let r = resources.environment_resources().unwrap();
        assert_eq!(
            (r.instances().len(), r.load_balancers().len()),
            (1, 1),
            "{r:?}"
        );
        let arn = e.environment_arn().unwrap();
        eb.update_tags_for_resource()
            .resource_arn(arn)
            .tags_to_add(Tag::builder().key("team").value("pym").build())
            .send()
            .await
            .unwrap();
        let tags = eb
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        assert!(
            tags.resource_tags()
                .iter()
                .any(|t| t.key() == Some("team") && t.value() == Some("pym")),
            "{tags:?}"
        );
        eb.update_tags_for_resource()
            .resource_arn(arn)
            .tags_to_remove("team")
            .send()
            .await
            .unwrap();
        assert!(
            eb.list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await
                .unwrap()
                .resource_tags()
                .iter()
                .all(|t| t.key() != Some("team"))
        );
        let missing = eb
            .list_tags_for_resource()
            .resource_arn(format!("{arn}-gone"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            missing.as_service_error().and_then(|e| code(e)).as_deref(),
            Some("ResourceNotFoundException")
        );

        // The instance's log, through RequestEnvironmentInfo, RetrieveEnvironmentInfo and
        // the URL it gives.
        eb.request_environment_info()
            .environment_name(env)
            .info_type(EnvironmentInfoType::Tail)
            .send()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let url = loop {
            let got = eb
                .retrieve_environment_info()
                .environment_name(env)
                .info_type(EnvironmentInfoType::Tail)
                .send()
                .await
                .unwrap();
            if let Some(m) = got.environment_info().first().and_then(|i| i.message()) {
                break m.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no tail log");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (host_port, path) = url
            .strip_prefix("http://")
            .unwrap()
            .split_once('/')
            .unwrap();
        let (host, port) = host_port.split_once(':').unwrap();
        let (status, log) =
            crate::support::http_get_at(host, port.parse().unwrap(), &format!("/{path}"))
                .expect("the log URL answers");
        assert!(
            status == 200 && log.contains("listening on port"),
            "{status}: {log}"
        );

        // Enhanced health: the environment's and its instance's.
        let enhanced = ConfigurationOptionSetting::builder()
            .namespace("aws:elasticbeanstalk:healthreporting:system")
            .option_name("SystemType")
            .value("enhanced")
            .build();
        let health = eb
            .describe_environment_health()
            .environment_name(env)
            .attribute_names(EnvironmentHealthAttribute::All)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                health.color(),
                health.instances_health().and_then(|i| i.ok())
            ),
            (Some("Green"), Some(1)),
            "{health:?}"
        );
        let instances = eb
            .describe_instances_health()
            .environment_name(env)
            .send()
            .await
            .unwrap();
        assert_eq!(instances.instance_health_list().len(), 1);

        // RestartAppServer: Updating, then Ready and Green again, its events carrying the
        // request's id.
        let restart = eb
            .restart_app_server()
            .environment_name(env)
            .send()
            .await
            .unwrap();
        let request = restart.request_id().expect("a request id").to_string();
        let e = ready(&eb, env).await;
        assert_eq!(e.health().map(|h| h.as_str()), Some("Green"));
        let events = eb
            .describe_events()
            .environment_name(env)
            .send()
            .await
            .unwrap();
        assert!(
            events.events().iter().any(|ev| ev.message()
                == Some("restartAppServer completed successfully.")
                && ev.request_id() == Some(request.as_str())),
            "no restart event with RequestId {request}"
        );

        // AbortEnvironmentUpdate: an update aborted before it runs leaves the environment
        // as it was; with no update under way, an error.
        eb.update_environment()
            .environment_name(env)
            .description("aborted")
            .send()
            .await
            .unwrap();
        eb.abort_environment_update()
            .environment_name(env)
            .send()
            .await
            .unwrap();
        let e = ready(&eb, env).await;
        assert_ne!(
            e.description(),
            Some("aborted"),
            "the aborted update took effect"
        );
        let idle = eb
            .abort_environment_update()
            .environment_name(env)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            idle.as_service_error().and_then(|e| code(e)).as_deref(),
            Some("InvalidParameterValue")
        );

        // What a deployed version and a running application refuse.
        let deployed = eb
            .delete_application_version()
            .application_name(app)
            .version_label(&label)
            .send()
            .await
            .unwrap_err();
        assert!(
            deployed
                .as_service_error()
                .and_then(|e| e.message())
                .is_some_and(|m| m.contains("running environment")),
            "{deployed:?}"
        );
        let running = eb
            .delete_application()
            .application_name(app)
            .send()
            .await
            .unwrap_err();
        assert!(
            running
                .as_service_error()
                .and_then(|e| e.message())
                .is_some_and(|m| m.contains("running environments")),
            "{running:?}"
        );

        // Default health checks, per load balancer type, on the same version: a classic
        // load balancer without a health check URL connects by TCP (Green though / is 404);
        // an application load balancer GETs / and wants 200 (Red, and enhanced health says
        // why). The classic one has basic health: no HealthStatus, no health operations.
        let stack = e.solution_stack_name().unwrap().to_string();
        let lb = |t: &str| {
            ConfigurationOptionSetting::builder()
                .namespace("aws:elasticbeanstalk:environment")
                .option_name("LoadBalancerType")
                .value(t)
                .build()
        };
        let suffix = std::process::id() % 10_000;
        let (classic, alb) = (format!("pym-classic-{suffix}"), format!("pym-alb-{suffix}"));
        eb.create_environment()
            .application_name(app)
            .environment_name(&classic)
            .version_label(&label)
            .solution_stack_name(&stack)
            .option_settings(lb("classic"))
            .send()
            .await
            .unwrap();
        eb.create_environment()
            .application_name(app)
            .environment_name(&alb)
            .version_label(&label)
            .solution_stack_name(&stack)
            .option_settings(lb("application"))
            .option_settings(enhanced)
            .send()
            .await
            .unwrap();
        let c = ready(&eb, &classic).await;
        assert_eq!(
            c.health().map(|h| h.as_str()),
            Some("Green"),
            "classic, no health check URL: a TCP check"
        );
        assert_eq!(
            c.health_status(),
            None,
            "HealthStatus without enhanced health"
        );
        let basic = eb
            .describe_environment_health()
            .environment_name(&classic)
            .attribute_names(EnvironmentHealthAttribute::All)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            basic.as_service_error().and_then(|e| code(e)).as_deref(),
            Some("InvalidRequestException")
        );
        let a = ready(&eb, &alb).await;
        assert_eq!(
            a.health().map(|h| h.as_str()),
            Some("Red"),
            "application, no health check path: GET / (404 here)"
        );
        let why = eb
            .describe_environment_health()
            .environment_name(&alb)
            .attribute_names(EnvironmentHealthAttribute::Causes)
            .send()
            .await
            .unwrap();
        assert!(
            why.causes()
                .iter()
                .any(|c| c.contains("GET / answered 404")),
            "{:?}",
            why.causes()
        );
        for name in [&classic, &alb] {
            eb.terminate_environment()
                .environment_name(name)
                .send()
                .await
                .unwrap();
        }
    });
    // A request without Action, unsigned as a form: MissingAction, as AWS documents.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "--data",
            "Version=2010-12-01",
            &fake.endpoint,
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("<Code>MissingAction</Code>"), "{body}");
}

/// `/version` through a CNAME of the shared local Beanstalk, as a client of the live
/// service sees it.
fn version_at(host: &str) -> Option<serde_json::Value> {
    let port = shared_fake().lb_port.expect("the shared load balancer");
    let (status, body) = http_get_at(host, port, "/version")?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// That `host` serves `version` with `PYM_ENV=live`, within 10 s, as a CNAME swap on
/// Beanstalk takes effect shortly after the call (DNS). One GET right after a promote's
/// put-back got no version once in a CI run, its answer not kept; the panic now says
/// what it answered last.
#[track_caller]
fn assert_serves(host: &str, version: &str) {
    let port = shared_fake().lb_port.expect("the shared load balancer");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = http_get_at(host, port, "/version");
        let served = answer
            .as_ref()
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok());
        if let Some(v) = &served
            && (v["version"].as_str(), v["pym_env"].as_str()) == (Some(version), Some("live"))
        {
            return;
        }
        if std::time::Instant::now() >= deadline {
            let app = host.split_once("-live.").map_or(host, |(app, _)| app);
            panic!(
                "{host}:{port} does not serve {version} with PYM_ENV=live after 10 s; its last answer: {answer:?}\n{}",
                shared_fake().dump(app)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_deploy_swaps_cnames_rolls_back_and_cleans_up() {
    need_engine();
    let t = Setup::new("ebl", shared_fake());
    let live = t.live_host();
    t.svc
        .edit(
            "pym-config.yaml",
            "env_secrets: []",
            "env_secrets: [PYM_IT_TOKEN]\naws_instance_type: t3.small\naws_keypair: pym-it\naws_hosts_min: 1\naws_hosts_max: 3\naws_cert_arn: arn:aws:acm:us-east-1:123456789012:certificate/pym-it",
        )
        .commit("settings and a secret");

    // The first deploy: all eight steps. The staged environment keeps its own CNAME; promote
    // creates the live one for the tested version, then ends the staged one.
    let r = t.xtask(&["deploy"]);
    r.assert_ok();
    for step in [
        "test",
        "build",
        "accept-local",
        "push",
        "stage",
        "accept-staging",
        "promote",
        "accept-live",
    ] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with(&format!("  {step} ")) && l.contains(" ok ")),
            "{step} not ok in the summary:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains("Successfully launched environment"),
        "Beanstalk's events are not shown:\n{}",
        r.stderr
    );
    let v1 = t.version();
    let env1 = t.live_env_of(&v1);
    assert_eq!(
        t.state(&env1),
        ("Ready".into(), "Green".into(), live.clone())
    );
    assert_serves(&live, &v1);
    let staged1 = t.state(&t.env_of(&v1));
    assert!(
        matches!(staged1.0.as_str(), "Terminating" | "Terminated") && staged1.2 != live,
        "the staged environment: {staged1:?}"
    );
    // The environment got the config's settings, and the secret reached the service.
    let options = t.fake.options(&t.svc.name, &env1);
    for (ns, name, value) in [
        (
            "aws:autoscaling:launchconfiguration",
            "InstanceType",
            "t3.small",
        ),
        (
            "aws:autoscaling:launchconfiguration",
            "EC2KeyName",
            "pym-it",
        ),
        ("aws:autoscaling:asg", "MinSize", "1"),
        ("aws:autoscaling:asg", "MaxSize", "3"),
        (
            "aws:elbv2:listener:443",
            "SSLCertificateArns",
            "arn:aws:acm:us-east-1:123456789012:certificate/pym-it",
        ),
        (
            "aws:elasticbeanstalk:application",
            "Application Healthcheck URL",
            "/ping",
        ),
        (
            "aws:elasticbeanstalk:application:environment",
            "PYM_ENV",
            "live",
        ),
        (
            "aws:elasticbeanstalk:application:environment",
            "PYM_IT_TOKEN",
            SERVICE_TOKEN,
        ),
    ] {
        assert!(
            options
                .iter()
                .any(|o| (o.0.as_str(), o.1.as_str(), o.2.as_str()) == (ns, name, value)),
            "no {ns} {name}={value} in {options:?}"
        );
    }
    let filter = format!("label=org.pymacaron.fake-aws.app={}", t.svc.name);
    let container = crate::support::docker(&["ps", "-q", "--filter", &filter]);
    let env_vars = crate::support::docker(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        container.lines().next().expect("a running container"),
    ]);
    assert!(
        env_vars.contains(&format!("PYM_IT_TOKEN={SERVICE_TOKEN}")),
        "{env_vars}"
    );

    // A second version: its own environment, then a CNAME swap; the first one is kept.
    t.svc
        .edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v2");
    let v2 = t.version();
    let env2 = t.env_of(&v2);
    // Staged, then promoted: the dry run of each is the list it carries out.
    t.xtask(&["deploy", "--to", "push"]).assert_ok();
    let dry = t.xtask(&["deploy", "--from", "stage", "--to", "stage", "--dry-run"]);
    let planned = crate::support::planned_actions(&dry.assert_ok().stdout);
    assert!(
        planned.iter().any(|a| a.starts_with(&format!(
            "create environment {env2} from {v2} on its own CNAME"
        ))),
        "{}",
        dry.stdout
    );
    let staged = t.xtask(&["deploy", "--from", "stage", "--to", "accept-staging"]);
    staged.assert_ok();
    assert_eq!(
        crate::support::taken_actions(&staged.stderr),
        planned,
        "the stage did not do what its dry run said:\n{}",
        staged.stderr
    );
    let dry = t.xtask(&[
        "deploy",
        "--from",
        "promote",
        "--to",
        "promote",
        "--dry-run",
    ]);
    let planned = crate::support::planned_actions(&dry.assert_ok().stdout);
    assert!(
        planned
            .iter()
            .any(|a| a.starts_with(&format!("swap CNAMEs: {env2} takes the live CNAME"))),
        "{}",
        dry.stdout
    );
    let promoted = t.xtask(&["deploy", "--from", "promote"]);
    promoted
        .assert_ok()
        .assert_stderr_has("Completed swapping CNAMEs")
        .assert_stderr_has(&format!("(was {v1}, kept on {env1} for rollback)"));
    assert_eq!(
        crate::support::taken_actions(&promoted.stderr),
        planned,
        "the promote did not do what its dry run said:\n{}",
        promoted.stderr
    );
    assert_serves(&live, &v2);
    assert_eq!(t.state(&env2).2, live);
    let (status, health, cname) = t.state(&env1);
    assert_eq!(
        (status.as_str(), health.as_str()),
        ("Ready", "Green"),
        "the previous environment is kept"
    );
    assert_eq!(
        cname,
        format!(
            "{}.us-east-1.elasticbeanstalk.localhost",
            env2.to_lowercase()
        ),
        "the CNAMEs were swapped"
    );

    // Rollback swaps back, and v2 is marked rolled back from.
    t.xtask(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v1} live again (was {v2})"));
    assert_serves(&live, &v1);
    let status = t.xtask(&["status"]);
    let table = &status.assert_ok().stdout;
    assert!(
        table.lines().any(|l| l.starts_with("live ")
            && l.contains(&v1)
            && l.contains("Green")
            && l.contains(&live)),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("rolled-back ") && l.contains(&v2)),
        "{table}"
    );

    // A third version, then a rollback: back to v1, live before v3, not to v2, the version
    // already rolled back from (issue 9's sequence, on Beanstalk).
    t.svc
        .edit("src/main.rs", "\"no such route\"", "\"nothing here\"")
        .commit("v3");
    let v3 = t.version();
    let env3 = t.env_of(&v3);
    t.xtask(&["deploy"]).assert_ok();
    assert_serves(&live, &v3);
    t.xtask(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v1} live again (was {v3})"));
    assert_serves(&live, &v1);
    // Promote makes the commit's version live again; the roles follow what was live when,
    // each beside its own CNAME, in rollback's order.
    t.xtask(&["promote"]).assert_ok();
    assert_serves(&live, &v3);
    let table = t.xtask(&["status"]).assert_ok().stdout.clone();
    let rows: Vec<(&str, &str)> = table
        .lines()
        .skip(1)
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0], w[2])
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("live", v3.as_str()),
            ("previous", v1.as_str()),
            ("rolled-back", v2.as_str())
        ],
        "{table}"
    );
    for l in table.lines().skip(1) {
        let env = l.split_whitespace().nth(1).unwrap();
        assert_eq!(
            l.split_whitespace().last().unwrap(),
            t.state(env).2,
            "{env} is shown beside another CNAME:\n{table}"
        );
    }

    // cleanup keeps one previous environment (keep_previous: 1): v1, the one rollback
    // would go to; v2, rolled back from, goes first.
    let dry = t.xtask(&["cleanup"]);
    dry.assert_ok().assert_stderr_has("run with --execute");
    assert!(
        dry.stdout.contains(&format!("keep {env1}"))
            && dry.stdout.contains(&format!("would terminate {env2}")),
        "{}",
        dry.stdout
    );
    assert_eq!(
        t.state(&env2).0,
        "Ready",
        "a dry cleanup terminated something"
    );
    let done = t.xtask(&["cleanup", "--execute"]);
    assert!(
        done.assert_ok()
            .stdout
            .contains(&format!("terminating {env2}")),
        "{}",
        done.stdout
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while t.state(&env2).0 != "Terminated" {
        assert!(
            std::time::Instant::now() < deadline,
            "{env2} is not terminated: {:?}",
            t.state(&env2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(t.state(&env1).0, "Ready");
    assert_eq!(t.state(&env3).2, live);
    assert_serves(&live, &v3);

    // Staging the same version again collides with its environment: refused before
    // anything is created.
    let before = t.fake.environments(&t.svc.name).len();
    let again = t.xtask(&["stage"]);
    again.assert_failed().assert_stderr_has(&format!(
        "environment {} already exists (Ready, Green)",
        t.env_of(&v3)
    ));
    assert_eq!(
        again.stderr.matches("error:").count(),
        1,
        "{}",
        again.stderr
    );
    assert_eq!(
        t.fake.environments(&t.svc.name).len(),
        before,
        "an environment was created"
    );
    assert_serves(&live, &v3);
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_failures_before_the_swap_leave_live_alone() {
    need_engine();
    let t = Setup::new("ebf", shared_fake());
    let live = t.live_host();
    let fail_on_staging = (
        "    assert_eq!(v[\"name\"]",
        "    assert_ne!(server.env, \"staging\", \"staging-only failure\");\n    assert_eq!(v[\"name\"]",
    );

    // A first deploy whose staging acceptance fails: nothing ever answers on the live
    // CNAME, and no environment holds it.
    t.svc
        .edit(
            "testaccept/tests/accept.rs",
            fail_on_staging.0,
            fail_on_staging.1,
        )
        .commit("fails on staging, first deploy");
    let r = t.xtask(&["deploy"]);
    r.assert_failed().assert_stderr_has("staging-only failure");
    assert!(
        version_at(&live).is_none(),
        "something answers on the live CNAME after a failed first deploy"
    );
    let holders: Vec<_> = t
        .fake
        .environments(&t.svc.name)
        .into_iter()
        .filter(|(.., cname)| *cname == live)
        .collect();
    assert!(
        holders.is_empty(),
        "an environment holds the live CNAME: {holders:?}"
    );
    t.svc
        .edit(
            "testaccept/tests/accept.rs",
            fail_on_staging.1,
            fail_on_staging.0,
        )
        .commit("accept again");

    // The registry credentials' bucket missing, then only their object: two different
    // errors, each with its fix, before any environment is created.
    let quick = ["deploy", "--no-test", "--skip", "accept-local"];
    let key = format!("{}/docker.cfg", t.svc.name);
    let environments = t.fake.environments(&t.svc.name).len();
    t.svc
        .edit(
            "pym-config.yaml",
            "docker_bucket: pym-it-registry-auth",
            "docker_bucket: pym-it-no-such-bucket",
        )
        .commit("a bucket that does not exist");
    t.xtask(&quick)
        .assert_failed()
        .assert_stderr_has("there is no S3 bucket pym-it-no-such-bucket (`docker_bucket`)")
        .assert_stderr_has("aws s3 mb");
    t.svc
        .edit(
            "pym-config.yaml",
            "docker_bucket: pym-it-no-such-bucket",
            "docker_bucket: pym-it-registry-auth",
        )
        .edit(
            "pym-config.yaml",
            &format!("docker_auth_key: {key}"),
            "docker_auth_key: nothing/here.cfg",
        )
        .commit("an object that does not exist");
    t.xtask(&quick).assert_failed().assert_stderr_has("no registry credentials at s3://pym-it-registry-auth/nothing/here.cfg (the bucket exists; the object does not)").assert_stderr_has("\"auths\"");
    assert_eq!(
        t.fake.environments(&t.svc.name).len(),
        environments,
        "an environment was created"
    );
    t.svc
        .edit(
            "pym-config.yaml",
            "docker_auth_key: nothing/here.cfg",
            &format!("docker_auth_key: {key}"),
        )
        .commit("the credentials back");

    t.xtask(&["deploy"]).assert_ok();
    let v1 = t.version();
    let env1 = t.live_env_of(&v1);

    // Acceptance fails on staging only: no swap.
    t.svc
        .edit(
            "testaccept/tests/accept.rs",
            fail_on_staging.0,
            fail_on_staging.1,
        )
        .commit("fails on staging");
    let v2 = t.version();
    let r = t.xtask(&["deploy"]);
    r.assert_failed().assert_stderr_has("staging-only failure");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("  accept-staging ") && l.contains("FAILED")),
        "{}",
        r.stderr
    );
    assert_serves(&live, &v1);
    assert_eq!(t.state(&env1).2, live, "live moved");
    assert_eq!(
        t.state(&t.env_of(&v2)).0,
        "Ready",
        "the staged environment stays for a look"
    );

    // The local Beanstalk, driven by the official SDK as a user looking at it would:
    // events a page at a time through the SDK's paginator, MaxRecords' limits, and an
    // update that removes an option and sets a description.
    #[cfg(feature = "aws-beanstalk")]
    sdk_looks_at(t.fake, &t.svc.name, &t.env_of(&v2));
    #[cfg(feature = "aws-beanstalk")]
    sdk_diagnoses(t.fake, &t.svc.name, &t.env_of(&v2));

    // An image that fails its health check on Beanstalk (but not locally): Red, the
    // events are shown, the environment is terminated, no swap.
    t.svc
        .edit(
            "testaccept/tests/accept.rs",
            "    assert_ne!(server.env, \"staging\", \"staging-only failure\");\n",
            "",
        )
        .commit("accept again");
    t.svc.edit("src/main.rs", "        (\"GET\", \"/ping\") => (200,", "        (\"GET\", \"/ping\") if info.pym_env == \"staging\" => (500, serde_json::json!({})),\n        (\"GET\", \"/ping\") => (200,").commit("sick on staging");
    let v3 = t.version();
    let env3 = t.env_of(&v3);
    let r = t.xtask(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has(&format!("environment {env3} is Ready but Red"));
    r.assert_stderr_has("ELB health is failing")
        .assert_stderr_has("Create environment operation is complete, but with errors");
    // Why, from Beanstalk's own diagnosis: the last lines of the instance's log.
    r.assert_stderr_has(
        "cause: ELB health is failing or not available for all instances: GET /ping answered 500",
    );
    r.assert_stderr_has("the last lines of its log")
        .assert_stderr_has("listening on port 8080 (PYM_ENV=staging)");
    r.assert_stderr_has(&format!("undo: terminate {env3}"))
        .assert_stderr_has(&format!("terminating {env3}"));
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("  stage ") && l.contains("FAILED")),
        "{}",
        r.stderr
    );
    assert!(
        matches!(t.state(&env3).0.as_str(), "Terminating" | "Terminated"),
        "{:?}",
        t.state(&env3)
    );
    assert_serves(&live, &v1);
    assert_eq!(t.state(&env1).2, live, "live moved");

    // Acceptance that fails on live only: promoted, then swapped back by the deploy.
    t.svc.edit("src/main.rs", "        (\"GET\", \"/ping\") if info.pym_env == \"staging\" => (500, serde_json::json!({})),\n", "").commit("healthy again");
    t.svc.edit("testaccept/tests/accept.rs", "    assert_eq!(v[\"name\"]", "    assert_ne!(server.env, \"live\", \"live-only failure\");\n    assert_eq!(v[\"name\"]").commit("fails on live");
    let v4 = t.version();
    let r = t.xtask(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("live-only failure")
        .assert_stderr_has(&format!("{v1} live again (was {v4})"));
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("  promote ") && l.contains(" ok ")),
        "{}",
        r.stderr
    );
    assert_serves(&live, &v1);
    assert_eq!(
        t.state(&env1).2,
        live,
        "live is not back on the first environment"
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_with_the_load_balancer_on_a_port_of_its_own_as_readme_says() {
    need_engine();
    // README's way to try it without root: `--lb-port 8000` and `aws_cname_port: 8000`
    // (a free port here). Staging and live are reached on that port, not on 80.
    let (fake, lb) = own_fake(Options::default().step_delay);
    let t = Setup::new("eblb", &fake);
    let r = t.xtask(&["deploy", "--no-test"]);
    r.assert_ok().assert_stderr_has(&format!(":{lb})"));
    let v1 = t.version();
    let (status, body) = http_get_at(&t.live_host(), lb, "/version")
        .expect("live answers on the load balancer's port");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["version"].as_str(), v["pym_env"].as_str()),
        (Some(v1.as_str()), Some("live"))
    );
    // One environment (the staged one was terminated): said in the singular.
    let s = t.xtask(&["status"]);
    assert!(
        s.assert_ok()
            .stderr
            .lines()
            .any(|l| l.starts_with("  status ") && l.ends_with(" 1 environment")),
        "{}",
        s.stderr
    );
}

#[test]
fn beanstalk_calls_retry_throttling_and_name_a_denied_operation() {
    // Its own server, without a load balancer: only the API is exercised.
    let fake = FakeAws::start(Options {
        lb_port: None,
        ..Default::default()
    })
    .expect("the local Beanstalk starts");
    let svc = TestService::new_for("ebapi", "aws-beanstalk");
    svc.edit(
        "pym-config.yaml",
        "docker_base:",
        "docker_repo: registry.example.com/team\naws_region: eu-west-3\ndocker_base:",
    )
    .commit("region");
    let env = aws_env(&fake);
    // Throttling, then a 503: retried with backoff, and the command succeeds.
    fake.fail(
        "DescribeEnvironments",
        400,
        "Throttling",
        "Rate exceeded",
        Some(2),
    );
    fake.fail(
        "DescribeEnvironments",
        503,
        "ServiceUnavailable",
        "Service is unavailable",
        Some(1),
    );
    let r = svc.xtask_env(&["status"], &env);
    r.assert_ok();
    assert!(r.stdout.starts_with("ROLE "), "{}", r.stdout);
    assert_eq!(
        fake.calls("DescribeEnvironments"),
        4,
        "three failed answers, then one that succeeded"
    );

    // A dry run prints the plan and creates nothing. Nothing is live here: the plan says
    // the first promote creates the live environment, as the run would (read from
    // Beanstalk, not written apart).
    let r = svc.xtask_env(&["deploy", "--dry-run"], &env);
    r.assert_ok();
    assert!(
        r.stdout.contains("as application version")
            && r.stdout.contains("on the live CNAME")
            && !r.stdout.contains("swap CNAMEs"),
        "{}",
        r.stdout
    );
    for op in [
        "CreateApplication",
        "CreateApplicationVersion",
        "CreateEnvironment",
        "SwapEnvironmentCNAMEs",
        "PutObject",
    ] {
        assert_eq!(fake.calls(op), 0, "a dry run called {op}");
    }

    // No credentials anywhere in the default chain: said so, with where to put them.
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["xtask", "status"]).current_dir(&svc.root);
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(
        env.iter()
            .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
            .copied(),
    );
    let r = crate::support::run(cmd);
    // Where the SDK looked, not only its last provider ("IMDS is disabled").
    r.assert_failed()
        .assert_stderr_has("no AWS credentials for elasticbeanstalk:DescribeEnvironments")
        .assert_stderr_has("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    r.assert_stderr_has("~/.aws/credentials")
        .assert_stderr_has("hint: on a workstation: `aws configure` or `aws sso login`");

    // A malformed region: one error with what regions look like, before any call.
    let before = fake.calls("DescribeEnvironments");
    svc.edit(
        "pym-config.yaml",
        "aws_region: eu-west-3",
        "aws_region: eu-west3",
    )
    .commit("a typo in the region");
    let line = 1 + svc
        .read("pym-config.yaml")
        .lines()
        .position(|l| l.starts_with("aws_region:"))
        .unwrap();
    svc.xtask_env(&["status"], &env)
        .assert_failed()
        .assert_stderr_has(&format!(
            "pym-config.yaml:{line}: \"eu-west3\" is not an AWS region"
        ))
        .assert_stderr_has("hint: AWS regions look like us-east-1");
    assert_eq!(
        fake.calls("DescribeEnvironments"),
        before,
        "a call was made with a malformed region"
    );
    svc.edit(
        "pym-config.yaml",
        "aws_region: eu-west3",
        "aws_region: eu-west-3",
    )
    .commit("the region fixed");

    // Access denied: one clear error naming the operation, with what to do.
    fake.fail("*", 403, "AccessDenied", "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: elasticbeanstalk:DescribeEnvironments", None);
    let r = svc.xtask_env(&["status"], &env);
    r.assert_failed().assert_stderr_has("AWS denied elasticbeanstalk:DescribeEnvironments: User: arn:aws:iam::123456789012:user/ci is not authorized");
    r.assert_stderr_has("hint: grant elasticbeanstalk:DescribeEnvironments");
    assert_eq!(r.stderr.matches("error:").count(), 1, "{}", r.stderr);
    let before = fake.calls("DescribeEnvironments");
    let r2 = svc.xtask_env(&["status"], &env);
    r2.assert_failed();
    assert_eq!(
        fake.calls("DescribeEnvironments"),
        before + 1,
        "access denied is not retried"
    );
    assert!(!r.stderr.contains(SECRET_KEY));
}

/// A deploy without the slow parts: staging's acceptance tests run (promote needs them).
const QUICK: [&str; 6] = [
    "deploy",
    "--no-test",
    "--skip",
    "accept-local",
    "--skip",
    "accept-live",
];

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_promotes_what_staging_runs_and_only_once_it_passed_acceptance() {
    need_engine();
    let t = Setup::new("ebrun", shared_fake());
    let live = t.live_host();
    // A run that would promote what it stages without testing it: refused before any step.
    let r = t.xtask(&["deploy", "--no-test", "--skip", "accept-staging"]);
    r.assert_failed()
        .assert_stderr_has("without its staging acceptance tests");
    assert!(!r.stderr.contains("==> build"), "a step ran:\n{}", r.stderr);
    t.xtask(&QUICK).assert_ok();
    let v1 = t.version();
    assert_serves(&live, &v1);

    // V2 staged, its acceptance never run: promote refuses, nothing changes.
    let v2 = t.next("v2");
    t.xtask(&[&QUICK[..], &["--to", "stage"]].concat())
        .assert_ok();
    let before = t.standing();
    t.pym(&["promote"], &[])
        .assert_failed()
        .assert_stderr_has(&format!(
            "{v2} runs on staging but has not passed staging acceptance"
        ))
        .assert_stderr_has("cargo xtask accept-staging");
    assert_eq!(t.standing(), before, "a refused promote changed something");
    assert_serves(&live, &v1);

    // It passes (recorded in a tag of the application); HEAD then moves ahead (V3, never
    // staged): promote makes V2 live, what staging ran and tested, not HEAD.
    t.pym(&["accept-staging"], &[]).assert_ok();
    let v3 = t.next("v3");
    let dry = t.pym(&["promote", "--dry-run"], &[]);
    dry.assert_ok().assert_stdout_has(&format!(
        "swap CNAMEs: {} takes the live CNAME",
        t.env_of(&v2)
    ));
    t.pym(&["promote"], &[])
        .assert_ok()
        .assert_stderr_has(&format!("{v2}, what staging runs (HEAD is {v3})"))
        .assert_stderr_has(&format!("{v2} live on"));
    assert_serves(&live, &v2);
    assert!(
        !t.standing().iter().any(|(n, ..)| n.contains(&v3)),
        "HEAD's version was deployed: {:?}",
        t.standing()
    );

    // V4 staged, its staging acceptance failing: promote refuses it with the hint.
    t.svc
        .edit(
            "testaccept/tests/accept.rs",
            "    assert_eq!(v[\"name\"]",
            "    assert_ne!(server.env, \"staging\", \"staging-only failure\");\n    assert_eq!(v[\"name\"]",
        )
        .commit("fails on staging");
    let v4 = t.version();
    t.xtask(&QUICK)
        .assert_failed()
        .assert_stderr_has("staging-only failure");
    let before = t.standing();
    t.pym(&["promote"], &[])
        .assert_failed()
        .assert_stderr_has(&format!(
            "{v4} runs on staging but has not passed staging acceptance"
        ))
        .assert_stderr_has("hint: test it with `cargo xtask accept-staging`");
    assert_eq!(t.standing(), before, "a refused promote changed something");
    assert_serves(&live, &v2);
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_rollback_twice_never_returns_to_the_version_it_left_unless_named() {
    need_engine();
    let t = Setup::new("ebrb", shared_fake());
    let live = t.live_host();
    let deploy = |message: &str| -> String {
        let v = t.next(message);
        t.xtask(&QUICK).assert_ok();
        assert_serves(&live, &v);
        v
    };
    let v0 = deploy("v0");
    let c1 = deploy("c1");
    let c2 = deploy("c2");
    // A rollback goes to C1; a second one further back, to V0, never to C2 again.
    t.pym(&["rollback"], &[])
        .assert_ok()
        .assert_stderr_has(&format!("{c1} live again (was {c2})"));
    assert_serves(&live, &c1);
    t.pym(&["rollback"], &[])
        .assert_ok()
        .assert_stderr_has(&format!("{v0} live again (was {c1})"));
    assert_serves(&live, &v0);
    let table = t.pym(&["status"], &[]).assert_ok().stdout.clone();
    for v in [&c1, &c2] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("rolled-back ") && l.contains(v.as_str())),
            "{table}"
        );
    }
    // A third would return to a version a rollback left: refused, nothing changed; named
    // with --to, it goes.
    let before = t.standing();
    t.pym(&["rollback"], &[])
        .assert_failed()
        .assert_stderr_has("every previous version kept was rolled back from")
        .assert_stderr_has("rollback --to VERSION");
    assert_eq!(t.standing(), before);
    assert_serves(&live, &v0);
    t.pym(&["rollback", "--to", &c2], &[])
        .assert_ok()
        .assert_stderr_has(&format!("{c2} live again (was {v0})"));
    assert_serves(&live, &c2);

    // destroy terminates every environment, live's first of its own; its dry run is the
    // list the run carries out. The application and its deploy record stay: status reads
    // them, and a rollback finds nothing live to go back from.
    let plan = t.pym(&["destroy", "--env", "live", "--dry-run"], &[]);
    let planned = crate::support::planned_actions(&plan.assert_ok().stdout);
    assert_eq!(
        planned.first(),
        Some(&format!("terminate {} (live, {c2})", t.env_of(&c2)))
    );
    let gone = t.pym(&["destroy", "--env", "all", "--yes"], &[]);
    gone.assert_ok();
    let taken = crate::support::taken_actions(&gone.stderr);
    assert!(
        taken.ends_with(&planned),
        "{taken:?} does not end with {planned:?}"
    );
    for (name, status, ..) in t.standing() {
        assert!(status.starts_with("Terminat"), "{name} is {status}");
    }
    t.pym(&["status"], &[]).assert_ok();
    t.pym(&["rollback"], &[])
        .assert_failed()
        .assert_stderr_has("no environment holds the live CNAME");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_a_failure_after_any_action_of_promote_leaves_live_as_it_was() {
    need_engine();
    let t = Setup::new("ebfp", shared_fake());
    let live = t.live_host();
    t.xtask(&QUICK).assert_ok();
    let v1 = t.version();
    let env1 = t.live_env_of(&v1);
    let v2 = t.next("v2");
    let env2 = t.env_of(&v2);
    t.xtask(&[&QUICK[..], &["--to", "accept-staging"]].concat())
        .assert_ok();
    let planned =
        crate::support::planned_actions(&t.pym(&["promote", "--dry-run"], &[]).assert_ok().stdout);
    let swap = planned
        .iter()
        .position(|a| a.starts_with("swap CNAMEs:"))
        .expect("a swap");
    let verify = planned
        .iter()
        .position(|a| a.starts_with("check the live address"))
        .expect("a check");
    let before = t.standing();
    // A failure where each action up to the check would start (the check itself
    // included): live serves V1, and what promote changed is put back.
    for after in 1..=verify {
        let r = t.pym(
            &["promote"],
            &[("PYMDEPLOY_FAIL_AFTER_ACTION", &after.to_string())],
        );
        r.assert_failed()
            .assert_stderr_has(&format!("failure injected after action {after}"))
            .assert_stderr_has(&format!("promoting {v2} failed; live is {v1} ({env1})"))
            .assert_stderr_has("put back: ")
            .assert_stderr_has(&format!("set PYM_ENV=staging on {env2} again"));
        if after > swap {
            r.assert_stderr_has(&format!("swap CNAMEs back: {env1} takes the live CNAME"));
        }
        assert_serves(&live, &v1);
        t.wait_until(&env2, "Ready", Some("Green"));
        assert_eq!(
            t.pym_env_of(&env2).as_deref(),
            Some("staging"),
            "after action {after}"
        );
        assert_eq!(
            t.standing(),
            before,
            "promote failing after action {after} left something:\n{}",
            r.stderr
        );
    }
    // After the check, the switch is verified and kept: a failure then (recording it)
    // fails the run, live serves V2.
    let r = t.pym(
        &["promote"],
        &[("PYMDEPLOY_FAIL_AFTER_ACTION", &(verify + 1).to_string())],
    );
    r.assert_failed()
        .assert_stderr_has(&format!("failure injected after action {}", verify + 1))
        .assert_stderr_has(&format!(
            "{v2} is live and verified, but promoting it did not finish"
        ));
    assert_serves(&live, &v2);
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_ctrl_c_during_stage_and_promote_leaves_live_as_it_was() {
    need_engine();
    // Its own Beanstalk, slower to update (an update can be aborted for a second), its
    // load balancer on a port of its own.
    let (fake, lb) = own_fake(Duration::from_secs(1));
    let t = Setup::new("ebint", &fake);
    let serves = |version: &str| {
        let (status, body) = http_get_at(&t.live_host(), lb, "/version").expect("live answers");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["version"].as_str(), Some(version), "{v}");
    };
    t.xtask(&QUICK).assert_ok();
    let v1 = t.version();
    let env1 = t.live_env_of(&v1);
    serves(&v1);

    // Ctrl-C while the staged environment launches: it is terminated, live as it was.
    let v2 = t.next("v2");
    let env2 = t.env_of(&v2);
    t.xtask(&[&QUICK[..], &["--to", "push"]].concat())
        .assert_ok();
    let mut run = t.spawn(&["stage"]);
    run.wait_for("- wait up to");
    let seen = run.seen.clone();
    let (code, rest, took) = run.interrupt();
    assert_eq!(code, Some(130), "exit code after Ctrl-C\n{seen}{rest}");
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to stop\n{rest}"
    );
    assert!(rest.contains(&format!("undo: terminate {env2}")), "{rest}");
    assert!(
        matches!(t.state(&env2).0.as_str(), "Terminating" | "Terminated"),
        "{:?}",
        t.state(&env2)
    );
    serves(&v1);
    assert_eq!(t.state(&env1).2, t.live_host());

    // Staged again and tested; Ctrl-C while PYM_ENV=live is applied to it, before the
    // swap: put back, live as it was.
    t.wait_until(&env2, "Terminated", None);
    t.xtask(&[&QUICK[..], &["--from", "stage", "--to", "accept-staging"]].concat())
        .assert_ok();
    let before = t.standing();
    let mut run = t.spawn(&["promote"]);
    run.wait_for("- wait up to");
    let seen = run.seen.clone();
    assert!(
        seen.contains(&format!("- set PYM_ENV=live on {env2}")),
        "{seen}"
    );
    let (code, rest, took) = run.interrupt();
    assert_eq!(code, Some(130), "exit code after Ctrl-C\n{seen}{rest}");
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to stop\n{rest}"
    );
    assert!(
        rest.contains(&format!("put back: set PYM_ENV=staging on {env2} again")),
        "{rest}"
    );
    serves(&v1);
    assert_eq!(t.state(&env1).2, t.live_host());
    t.wait_until(&env2, "Ready", Some("Green"));
    assert_eq!(t.pym_env_of(&env2).as_deref(), Some("staging"));
    assert_eq!(t.standing(), before);
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn beanstalk_deploys_from_a_github_actions_job_with_its_identity_token_alone() {
    need_engine();
    // A Beanstalk of its own, so every call it sees is this deploy's.
    let (fake, lb) = own_fake(Duration::from_millis(100));
    let mut t = Setup::new("eboidc", &fake);
    let issuer = pym_fake_common::oidc::Issuer::start("repo:pymdeploy/it:environment:live")
        .expect("the token issuer starts");
    let role = format!(
        "arn:aws:iam::123456789012:role/pym-it-deploy-{}",
        std::process::id()
    );
    t.svc
        .edit(
            "pym-config.yaml",
            "aws_region: us-east-1",
            &format!("aws_region: us-east-1\naws_role_arn: {role}"),
        )
        .commit("deploy as a role");
    // No AWS key anywhere: only the job's token.
    t.env
        .retain(|(k, _)| !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET"));
    t.env.push((
        "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
        issuer.request_url.clone(),
    ));
    t.env.push((
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(),
        issuer.request_token.clone(),
    ));
    let r = t.xtask(&QUICK);
    r.assert_ok();
    let (status, body) =
        http_get_at(&t.live_host(), lb, "/version").expect("live answers on the load balancer");
    assert!(
        status == 200 && body.contains(&t.version()),
        "{status} {body}"
    );

    // The token was asked for STS's audience, and exchanged for the role.
    let audiences = issuer.audiences();
    assert!(
        !audiences.is_empty() && audiences.iter().all(|a| a == "sts.amazonaws.com"),
        "{audiences:?}"
    );
    let sessions = fake.web_identities();
    assert!(
        !sessions.is_empty()
            && sessions
                .values()
                .all(|s| s.role == role && s.subject == "repo:pymdeploy/it:environment:live"),
        "{sessions:?}"
    );
    // Every signed call of the deploy was signed with the exchanged credentials (each
    // with its session token, which the server checks), and none of them printed.
    let by_key = fake.calls_by_key();
    assert!(
        !by_key.is_empty() && by_key.keys().all(|k| sessions.contains_key(k)),
        "calls signed by keys STS did not give: {by_key:?}"
    );
    for s in sessions.values() {
        r.assert_hides(&[&s.secret, &s.token]);
    }
}
