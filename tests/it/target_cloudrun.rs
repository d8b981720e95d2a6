//! The gcp-cloud-run target, driven through the generated xtask (which enables the
//! `gcp-cloud-run` feature) and Google's official client, against the local Cloud Run of
//! `tests/fake-gcp`. Revisions run as real containers; the service URL and each tag URL
//! (`*.a.run.localhost`) reach them through the server's front door.

use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pym_fake_gcp::{FakeGcp, Options};

use crate::support::{Registry, Run, TestService, http_get_at, need_engine, temp_dir};

const SERVICE_TOKEN: &str = "pym-it-run-token-Vb82";

/// A service-account key with a real RSA key (made once): the client signs its own JWTs
/// with it, as it does with a key from Google.
fn key_file() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let path = temp_dir("gcp-key").join("key.json");
        pym_fake_gcp::write_service_account_key(
            &path,
            "pym-it",
            "https://oauth2.googleapis.com/token",
        )
        .expect("a key (openssl runs: run .ci/setup)");
        path.to_string_lossy().to_string()
    })
}

/// The key, its `token_uri` the local Cloud Run's (which issues identity tokens).
fn key_for(fake: &FakeGcp) -> String {
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(key_file()).unwrap()).unwrap();
    key["token_uri"] = format!("{}/token", fake.endpoint).into();
    let path = std::path::Path::new(key_file()).with_file_name(format!("key-{}.json", fake.port));
    std::fs::write(&path, key.to_string()).unwrap();
    path.to_string_lossy().to_string()
}

/// The private key's body: it must never be printed.
fn key_secret() -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(key_file()).unwrap()).unwrap();
    v["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string()
}

/// The registry credentials the local Cloud Run pulls with, one entry per test registry.
fn pull_config() -> &'static (std::path::PathBuf, Mutex<serde_json::Value>) {
    static DIR: OnceLock<(std::path::PathBuf, Mutex<serde_json::Value>)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("gcp-pull");
        std::fs::write(dir.join("config.json"), "{\"auths\": {}}").unwrap();
        (dir, Mutex::new(serde_json::json!({"auths": {}})))
    })
}

fn shared_fake() -> &'static FakeGcp {
    static FAKE: OnceLock<FakeGcp> = OnceLock::new();
    FAKE.get_or_init(own_fake)
}

/// A local Cloud Run of the test's own, for a test that counts every call (operations
/// included, which name no service) or injects faults.
fn own_fake() -> FakeGcp {
    FakeGcp::start(Options {
        startup_timeout: Duration::from_secs(10),
        docker_config: Some(pull_config().0.clone()),
        ..Default::default()
    })
    .expect("the local Cloud Run starts")
}

/// A service on the gcp-cloud-run target, its registry, and the environment that points
/// the client at the local Cloud Run.
struct Setup<'a> {
    fake: &'a FakeGcp,
    svc: TestService,
    reg: Registry,
    env: Vec<(String, String)>,
}

impl<'a> Setup<'a> {
    fn new(tag: &str, fake: &'a FakeGcp) -> Setup<'a> {
        Setup::with(fake, |reg| {
            let svc = TestService::new_for(tag, "gcp-cloud-run");
            svc.edit("pym-config.yaml", "# docker_repo: registry.example.com/team", &format!("docker_repo: {}/team\ngcp_project: pym-it\ngcp_region: us-central1\nkeep_previous: 1\ngcp_timeout: 60", reg.host))
                .commit("deploy to the local Cloud Run");
            svc
        })
    }

    /// A registry the local Cloud Run pulls from, and the service `make` sets up on it.
    fn with(fake: &'a FakeGcp, make: impl FnOnce(&Registry) -> TestService) -> Setup<'a> {
        let reg = Registry::start();
        {
            let (dir, config) = pull_config();
            let mut c = config.lock().unwrap();
            use base64::Engine;
            c["auths"][&reg.host] = serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, reg.password)) });
            std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        }
        let svc = make(&reg);
        let env = [
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN",
                format!("{}/", fake.endpoint),
            ),
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING",
                format!("{}/", fake.endpoint),
            ),
            ("GOOGLE_APPLICATION_CREDENTIALS", key_for(fake)),
            ("GCE_METADATA_HOST", "metadata.invalid".to_string()),
            ("PYM_IT_TOKEN", SERVICE_TOKEN.to_string()),
        ];
        let env = env
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(
                reg.env()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .collect();
        Setup {
            fake,
            svc,
            reg,
            env,
        }
    }

    fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_with(args, &[])
    }

    /// `xtask`, with `extra` added to the environment.
    fn xtask_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env = self.env();
        env.extend_from_slice(extra);
        let r = self.svc.xtask_env(args, &env);
        r.assert_hides(&[SERVICE_TOKEN, &self.reg.password, &key_secret()]);
        r
    }

    /// The environment that points a run at the local Cloud Run and the registry.
    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The names of the containers the local Cloud Run runs for this service's revisions.
    fn containers(&self) -> Vec<String> {
        let names = crate::support::docker(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name={}", self.svc.name),
        ]);
        let mut names: Vec<String> = names.lines().map(str::to_string).collect();
        names.sort();
        names
    }

    fn version(&self) -> String {
        self.svc
            .pym(&["version"])
            .assert_ok()
            .stdout
            .trim()
            .to_string()
    }

    /// The service as the local Cloud Run has it (the REST answer, enums as names).
    fn service(&self) -> serde_json::Value {
        api(
            self.fake,
            "GET",
            &format!(
                "/v2/projects/pym-it/locations/us-central1/services/{}",
                self.svc.name
            ),
            None,
        )
    }

    fn revision(&self, name: &str) -> serde_json::Value {
        api(
            self.fake,
            "GET",
            &format!(
                "/v2/projects/pym-it/locations/us-central1/services/{}/revisions/{name}",
                self.svc.name
            ),
            None,
        )
    }

    fn revisions(&self) -> Vec<String> {
        let list = api(
            self.fake,
            "GET",
            &format!(
                "/v2/projects/pym-it/locations/us-central1/services/{}/revisions",
                self.svc.name
            ),
            None,
        );
        list["revisions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        r["name"]
                            .as_str()
                            .unwrap()
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Percent per revision of the service's traffic.
    fn traffic(&self) -> Vec<(String, i64, String)> {
        let s = self.service();
        s["traffic"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["revision"].as_str().unwrap_or("").to_string(),
                    t["percent"].as_i64().unwrap_or(0),
                    t["tag"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The calls made on this service since the `before`th call (the local Cloud Run is
    /// shared by tests that run at once).
    fn calls_since(&self, before: usize) -> Vec<(String, String)> {
        calls(self.fake)[before..]
            .iter()
            .filter(|(_, path)| path.contains(&format!("/services/{}", self.svc.name)))
            .cloned()
            .collect()
    }

    /// `fault`, for the calls on this service only.
    fn fault(&self, method: &str, code: u16, status: &str, message: &str, times: Option<u32>) {
        let mut f = serde_json::json!({"method": method, "path": format!("/services/{}", self.svc.name), "code": code, "status": status, "message": message});
        if let Some(n) = times {
            f["times"] = n.into();
        }
        api(self.fake, "POST", "/__fake/faults", Some(&f));
    }

    fn url(&self, tag: Option<&str>) -> String {
        let s = self.service();
        match tag {
            None => s["uri"].as_str().unwrap().to_string(),
            Some(t) => s["trafficStatuses"]
                .as_array()
                .unwrap()
                .iter()
                .find(|st| st["tag"] == t)
                .map(|st| st["uri"].as_str().unwrap().to_string())
                .unwrap_or_default(),
        }
    }
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        let _ = api_raw(
            self.fake,
            "DELETE",
            &format!(
                "/v2/projects/pym-it/locations/us-central1/services/{}",
                self.svc.name
            ),
            None,
        );
        // The shared server outlives the test (a static is never dropped): its revisions'
        // containers go now, not when it deletes them in the background.
        let ids =
            crate::support::docker(&["ps", "-aq", "--filter", &format!("name={}", self.svc.name)]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// One call to the local Cloud Run's REST API (or its `/__fake/` hooks): status and body.
fn api_raw(
    fake: &FakeGcp,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "-H",
        "Authorization: Bearer test",
        "-H",
        "Content-Type: application/json",
    ]);
    if let Some(b) = body {
        cmd.args(["-d", &b.to_string()]);
    }
    let out = cmd
        .arg(format!("{}{path}", fake.endpoint))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[track_caller]
fn api(
    fake: &FakeGcp,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let (code, text) = api_raw(fake, method, path, body);
    assert!((200..300).contains(&code), "{method} {path}: {code} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn fault(fake: &FakeGcp, method: &str, code: u16, status: &str, message: &str, times: Option<u32>) {
    let mut f =
        serde_json::json!({"method": method, "code": code, "status": status, "message": message});
    if let Some(n) = times {
        f["times"] = n.into();
    }
    api(fake, "POST", "/__fake/faults", Some(&f));
}

fn calls(fake: &FakeGcp) -> Vec<(String, String)> {
    let v = api(fake, "GET", "/__fake/calls", None);
    v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["method"].as_str().unwrap_or("").to_string(),
                c["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// What a URL's `/version` says, if it answers.
fn served(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse().unwrap()))
        .unwrap_or((rest.to_string(), 80));
    let (status, body) = http_get_at(&host, port, "/version")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some((
        v["version"].as_str()?.to_string(),
        v["pym_env"].as_str()?.to_string(),
    ))
}

#[track_caller]
fn assert_serves(url: &str, version: &str, env: &str) {
    // The front door splits by connection: ask a few times.
    for _ in 0..5 {
        assert_eq!(
            served(url),
            Some((version.to_string(), env.to_string())),
            "{url}"
        );
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_stages_a_tagged_revision_promotes_by_digest_rolls_back_and_cleans_up() {
    need_engine();
    // Its own local Cloud Run: it counts the operation polls, which name no service.
    let fake = own_fake();
    let t = Setup::new("run", &fake);
    t.svc.edit("pym-config.yaml", "env_secrets: []", "env_secrets: [PYM_IT_TOKEN]\ngcp_memory: 512Mi\ngcp_cpu: '1'\ngcp_request_concurrency: 40\ngcp_max_instances: 3").commit("settings and a secret");

    // The first deploy: all eight steps.
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
    let v1 = t.version();
    let (s1, l1) = (
        format!("{}-{v1}-s1", t.svc.name),
        format!("{}-{v1}-l1", t.svc.name),
    );
    assert_serves(&t.url(None), &v1, "live");
    assert_serves(&t.url(Some("staging")), &v1, "staging");
    assert_eq!(
        t.traffic(),
        vec![
            (l1.clone(), 100, String::new()),
            (s1.clone(), 0, "staging".into())
        ]
    );
    // The live revision runs the very image (digest) staging tested, with PYM_ENV=live.
    let (staged, live) = (t.revision(&s1), t.revision(&l1));
    let image = live["containers"][0]["image"].as_str().unwrap().to_string();
    assert!(image.contains("@sha256:"), "{image}");
    assert_eq!(
        staged["containers"][0]["image"].as_str(),
        Some(image.as_str())
    );
    let env_of = |r: &serde_json::Value, k: &str| {
        r["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == k)
            .and_then(|e| e["value"].as_str().map(String::from))
    };
    assert_eq!(env_of(&live, "PYM_ENV").as_deref(), Some("live"));
    assert_eq!(env_of(&staged, "PYM_ENV").as_deref(), Some("staging"));
    assert_eq!(
        env_of(&live, "PYM_IT_TOKEN").as_deref(),
        Some(SERVICE_TOKEN)
    );
    assert_eq!(
        live["containers"][0]["resources"]["limits"]["memory"],
        "512Mi"
    );
    assert_eq!(live["maxInstanceRequestConcurrency"], 40);
    assert_eq!(live["scaling"]["maxInstanceCount"], 3);
    // Public, through the IAM policy.
    let policy = api(
        t.fake,
        "GET",
        &format!(
            "/v2/projects/pym-it/locations/us-central1/services/{}:getIamPolicy",
            t.svc.name
        ),
        None,
    );
    assert!(
        policy.to_string().contains("allUsers") && policy.to_string().contains("roles/run.invoker"),
        "{policy}"
    );

    // A second version, staged: a new revision on the staging tag, live untouched.
    t.svc
        .edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v2");
    let v2 = t.version();
    let s2 = format!("{}-{v2}-s1", t.svc.name);
    t.xtask(&["deploy", "--to", "push"]).assert_ok();
    let dry = t.xtask(&["deploy", "--from", "stage", "--to", "stage", "--dry-run"]);
    let planned = crate::support::planned_actions(&dry.assert_ok().stdout);
    assert!(
        planned
            .iter()
            .any(|a| a.starts_with(&format!("add revision {s2} to"))),
        "{}",
        dry.stdout
    );
    let before = calls(t.fake).len();
    // A 503 on the update: retried (the fake refused it before applying anything).
    t.fault(
        "UpdateService",
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
        Some(1),
    );
    let staged = t.xtask(&["deploy", "--from", "stage", "--to", "accept-staging"]);
    staged.assert_ok();
    assert_eq!(
        crate::support::taken_actions(&staged.stderr),
        planned,
        "the stage did not do what its dry run said:\n{}",
        staged.stderr
    );
    let made: Vec<(String, String)> = calls(t.fake)[before..].to_vec();
    // The stage's update twice (the 503, then its retry), and accept-staging's record.
    let updates: Vec<(String, String)> = t
        .calls_since(before)
        .into_iter()
        .filter(|(m, _)| m == "UpdateService")
        .collect();
    assert_eq!(
        updates.len(),
        3,
        "the 503 was not retried once: {updates:?}"
    );
    // The operation is polled with backoff, not in a tight loop (the rollout takes seconds).
    let polls = made.iter().filter(|(m, _)| m == "GetOperation").count();
    assert!(
        (1..=20).contains(&polls),
        "{polls} GetOperation calls for one stage"
    );
    assert_eq!(
        t.traffic(),
        vec![
            (l1.clone(), 100, String::new()),
            (s2.clone(), 0, "staging".into())
        ],
        "a stage moved traffic"
    );
    assert_serves(&t.url(None), &v1, "live");
    assert_serves(&t.url(Some("staging")), &v2, "staging");

    // Promote: its dry run is what it does; the traffic moves all at once to a revision of
    // the same digest with PYM_ENV=live; the previous live revision keeps running at 0%.
    let before = calls(t.fake).len();
    let dry = t.xtask(&["promote", "--dry-run"]);
    let planned = crate::support::planned_actions(&dry.assert_ok().stdout);
    assert_no_mutation(&t.calls_since(before));
    let promoted = t.xtask(&["deploy", "--from", "promote"]);
    promoted.assert_ok();
    assert_eq!(
        crate::support::taken_actions(&promoted.stderr),
        planned,
        "the promote did not do what its dry run said:\n{}",
        promoted.stderr
    );
    let l2 = format!("{}-{v2}-l1", t.svc.name);
    assert_eq!(
        t.traffic(),
        vec![
            (l2.clone(), 100, String::new()),
            (s2.clone(), 0, "staging".into())
        ]
    );
    assert_serves(&t.url(None), &v2, "live");
    assert_eq!(
        t.revision(&l2)["containers"][0]["image"],
        t.revision(&s2)["containers"][0]["image"]
    );
    assert!(
        t.revisions().contains(&l1),
        "the previous live revision was deleted"
    );

    // Rollback: back to v1's live revision, from a record on the service.
    t.xtask(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v1} live again"));
    assert_serves(&t.url(None), &v1, "live");
    let status = t.xtask(&["status"]);
    let table = &status.assert_ok().stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("live ") && l.contains(&l1) && l.contains("100%")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("rolled-back ") && l.contains(&l2)),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("staging ") && l.contains(&s2) && l.contains("staging")),
        "{table}"
    );
    // Promote again makes v2 live; cleanup keeps one previous live revision (v1's) and
    // what carries a tag, and deletes the rest.
    // A standalone promote asks for what staging runs by name: v2, a rollback left it.
    t.xtask(&["promote"]).assert_ok();
    assert_serves(&t.url(None), &v2, "live");
    let dry = t.xtask(&["cleanup"]);
    assert!(
        dry.assert_ok().stdout.contains(&format!("keep {l1}"))
            && dry.stdout.contains(&format!("would delete {s1}")),
        "{}",
        dry.stdout
    );
    assert!(
        t.revisions().contains(&s1),
        "a dry cleanup deleted something"
    );
    let done = t.xtask(&["cleanup", "--execute"]);
    assert!(
        done.assert_ok().stdout.contains(&format!("deleted {s1}")),
        "{}",
        done.stdout
    );
    let left = t.revisions();
    assert!(
        !left.contains(&s1) && left.contains(&l1) && left.contains(&l2) && left.contains(&s2),
        "{left:?}"
    );
    assert_serves(&t.url(None), &v2, "live");

    // A third version, then a rollback: to v2, live again since its rollback, not v1.
    t.svc
        .edit("src/main.rs", "\"no such route\"", "\"nothing here\"")
        .commit("v3");
    let v3 = t.version();
    t.xtask(&["deploy", "--no-test"]).assert_ok();
    assert_serves(&t.url(None), &v3, "live");
    t.xtask(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v2} live again"));
    assert_serves(&t.url(None), &v2, "live");
}

/// No call that changes anything.
#[track_caller]
fn assert_no_mutation(made: &[(String, String)]) {
    for (m, _) in made {
        assert!(
            ![
                "CreateService",
                "UpdateService",
                "DeleteService",
                "DeleteRevision",
                "SetIamPolicy"
            ]
            .contains(&m.as_str()),
            "a dry run called {m}"
        );
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_failures_before_the_switch_leave_live_alone() {
    need_engine();
    let t = Setup::new("runf", shared_fake());
    t.xtask(&["deploy", "--no-test"]).assert_ok();
    let v1 = t.version();
    let traffic = t.traffic();

    // Acceptance fails on staging only: no traffic moves.
    let fail_on_staging = (
        "    assert_eq!(v[\"name\"]",
        "    assert_ne!(server.env, \"staging\", \"staging-only failure\");\n    assert_eq!(v[\"name\"]",
    );
    t.svc
        .edit(
            "testaccept/tests/accept.rs",
            fail_on_staging.0,
            fail_on_staging.1,
        )
        .commit("fails on staging");
    let r = t.xtask(&["deploy", "--no-test"]);
    r.assert_failed().assert_stderr_has("staging-only failure");
    let v2 = t.version();
    assert_eq!(t.traffic()[0], traffic[0], "live moved");
    assert_eq!(t.traffic()[1].0, format!("{}-{v2}-s1", t.svc.name));
    assert_serves(&t.url(None), &v1, "live");
    t.svc
        .edit(
            "testaccept/tests/accept.rs",
            fail_on_staging.1,
            fail_on_staging.0,
        )
        .commit("accept again");

    // A revision that never listens on $PORT on Cloud Run: Cloud Run's message, no
    // traffic change.
    t.svc.edit("src/main.rs", "tokio::net::TcpListener::bind((\"0.0.0.0\", port))", "tokio::net::TcpListener::bind((\"0.0.0.0\", if info.pym_env == \"staging\" { port + 1 } else { port }))").commit("deaf on staging");
    let v3 = t.version();
    let before = t.traffic();
    let r = t.xtask(&["deploy", "--no-test"]);
    r.assert_failed()
        .assert_stderr_has(
            "failed to start and listen on the port defined provided by the PORT=8080",
        )
        .assert_stderr_has("no traffic moved");
    r.assert_stderr_has("(reason ");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("  stage ") && l.contains("FAILED")),
        "{}",
        r.stderr
    );
    assert_eq!(t.traffic(), before, "the traffic changed");
    assert_serves(&t.url(None), &v1, "live");
    let failed = t.revision(&format!("{}-{v3}-s1", t.svc.name));
    assert!(
        failed["conditions"]
            .to_string()
            .contains("CONDITION_FAILED"),
        "{failed}"
    );

    // Healthy on staging, sick with PYM_ENV=live: promote's check on the `next` tag URL
    // fails, and no traffic moves.
    t.svc
        .edit(
            "src/main.rs",
            "if info.pym_env == \"staging\" { port + 1 } else { port }",
            "port",
        )
        .commit("listening again");
    t.svc.edit("src/main.rs", "        (\"GET\", \"/ping\") => (200,", "        (\"GET\", \"/ping\") if info.pym_env == \"live\" => (500, serde_json::json!({})),\n        (\"GET\", \"/ping\") => (200,").commit("sick on live");
    let v4 = t.version();
    let before = t.traffic()[0].clone();
    let r = t.xtask(&["deploy", "--no-test"]);
    r.assert_failed().assert_stderr_has(&format!(
        "does not serve version {v4} with PYM_ENV=live: /ping answered 500"
    ));
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("  promote ") && l.contains("FAILED")),
        "{}",
        r.stderr
    );
    assert_eq!(t.traffic()[0], before, "live moved");
    assert_serves(&t.url(None), &v1, "live");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_private_service_is_checked_and_tested_with_an_identity_token() {
    need_engine();
    let t = Setup::new("runp", shared_fake());
    t.svc
        .edit(
            "pym-config.yaml",
            "keep_previous: 1",
            "keep_previous: 1\ngcp_allow_unauthenticated: false",
        )
        .commit("private");
    // Checks and acceptance tests present an identity token for the service's URL.
    let r = t.xtask(&["deploy", "--no-test"]);
    r.assert_ok()
        .assert_stderr_has("private: no roles/run.invoker for allUsers");
    let v1 = t.version();
    let policy = || {
        api(
            t.fake,
            "GET",
            &format!(
                "/v2/projects/pym-it/locations/us-central1/services/{}:getIamPolicy",
                t.svc.name
            ),
            None,
        )
        .to_string()
    };
    assert!(!policy().contains("allUsers"), "{}", policy());
    // Without a token, Cloud Run says no.
    let url = t.url(None);
    let rest = url.split_once("://").unwrap().1;
    let (host, port) = rest.rsplit_once(':').unwrap();
    let (status, _) =
        http_get_at(host, port.parse().unwrap(), "/version").expect("the front door answers");
    assert_eq!(status, 403);
    // Made public, then private again, by the IAM policy alone.
    t.svc
        .edit(
            "pym-config.yaml",
            "gcp_allow_unauthenticated: false",
            "gcp_allow_unauthenticated: true",
        )
        .commit("public");
    t.xtask(&["deploy", "--no-test", "--to", "accept-staging"])
        .assert_ok();
    assert!(policy().contains("allUsers"), "{}", policy());
    assert_serves(&t.url(None), &v1, "live");
    t.svc
        .edit(
            "pym-config.yaml",
            "gcp_allow_unauthenticated: true",
            "gcp_allow_unauthenticated: false",
        )
        .commit("private again");
    t.xtask(&["deploy", "--no-test", "--to", "accept-staging"])
        .assert_ok()
        .assert_stderr_has("no longer allows unauthenticated invocations");
    assert!(!policy().contains("allUsers"), "{}", policy());
}

#[test]
fn cloud_run_refuses_bad_input_before_any_call_and_explains_google_errors() {
    // The API only: no revision runs here.
    let fake = FakeGcp::start(Options::default()).expect("the local Cloud Run starts");
    let svc = TestService::new_for("runapi", "gcp-cloud-run");
    svc.edit(
        "pym-config.yaml",
        "# docker_repo: registry.example.com/team",
        "docker_repo: registry.example.com/team\ngcp_project: pym-it\ngcp_region: europe-west1",
    )
    .commit("project");
    let endpoint = format!("{}/", fake.endpoint);
    let env = [
        ("CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN", endpoint.as_str()),
        ("GOOGLE_APPLICATION_CREDENTIALS", key_file()),
        ("GCE_METADATA_HOST", "metadata.invalid"),
    ];
    let secret = key_secret();
    let xtask = |args: &[&str]| {
        let r = svc.xtask_env(args, &env);
        r.assert_hides(&[&secret]);
        r
    };

    // 429 twice, then 503: retried with backoff, and status succeeds.
    fault(
        &fake,
        "GetService",
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Requests'",
        Some(2),
    );
    fault(
        &fake,
        "GetService",
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
        Some(1),
    );
    let r = xtask(&["status"]);
    r.assert_ok();
    assert!(r.stdout.starts_with("ROLE "), "{}", r.stdout);
    assert_eq!(
        calls(&fake)
            .iter()
            .filter(|(m, _)| m == "GetService")
            .count(),
        4,
        "three failed answers, then one that succeeded"
    );

    // A dry run of a whole deploy makes no mutating call.
    let r = xtask(&["deploy", "--dry-run"]);
    r.assert_ok();
    assert!(
        r.stdout.contains("create the Cloud Run service"),
        "{}",
        r.stdout
    );
    assert_no_mutation(&calls(&fake));

    // PERMISSION_DENIED: one error naming the method and the role.
    fault(
        &fake,
        "*",
        403,
        "PERMISSION_DENIED",
        "Permission 'run.services.get' denied on resource 'projects/pym-it/locations/europe-west1/services/x' (or it may not exist).",
        None,
    );
    let r = xtask(&["status"]);
    r.assert_failed()
        .assert_stderr_has("Google Cloud denied run.services.get")
        .assert_stderr_has("roles/run.developer");
    assert_eq!(r.stderr.matches("error:").count(), 1, "{}", r.stderr);
    api(&fake, "DELETE", "/__fake/faults", None);

    // No credentials anywhere: where it looked, and the gcloud command.
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["xtask", "status"])
        .current_dir(&svc.root)
        .env("CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN", &endpoint)
        .env("GCE_METADATA_HOST", "metadata.invalid")
        .env("HOME", temp_dir("gcp-home"))
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("CLOUDSDK_CONFIG");
    let r = crate::support::run(cmd);
    r.assert_failed()
        .assert_stderr_has("no Google Cloud credentials: looked in GOOGLE_APPLICATION_CREDENTIALS")
        .assert_stderr_has("gcloud auth application-default login");

    // A service name Cloud Run would refuse (tag + name over 46): refused before any call.
    let n = calls(&fake).len();
    svc.edit(
        "pym-config.yaml",
        "gcp_project: pym-it",
        &format!("gcp_project: pym-it\ngcp_service: {}", "a".repeat(40)),
    )
    .commit("a long name");
    let r = xtask(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("Cloud Run takes at most 46");
    assert!(
        !r.stderr.contains("  test "),
        "a step ran before the refusal:\n{}",
        r.stderr
    );
    assert_eq!(
        calls(&fake).len(),
        n,
        "a call was made with a name Cloud Run would refuse"
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_promotes_what_staging_runs_and_only_once_it_passed_acceptance() {
    need_engine();
    let t = Setup::new("runs", shared_fake());
    // A run that would promote what it stages without testing it: refused before any step.
    let r = t.xtask(&["deploy", "--no-test", "--skip", "accept-staging"]);
    r.assert_failed()
        .assert_stderr_has("without its staging acceptance tests");
    assert!(!r.stderr.contains("==> build"), "a step ran:\n{}", r.stderr);
    t.xtask(&["deploy", "--no-test", "--skip", "accept-local"])
        .assert_ok();
    let v1 = t.version();
    assert_serves(&t.url(None), &v1, "live");

    // V2 staged, its acceptance never run: promote refuses, live stays V1.
    let main = t.svc.read("src/main.rs");
    t.svc
        .write("src/main.rs", &format!("{main}// v2\n"))
        .commit("v2");
    let v2 = t.version();
    t.xtask(&[
        "deploy",
        "--no-test",
        "--skip",
        "accept-local",
        "--to",
        "stage",
    ])
    .assert_ok();
    assert_serves(&t.url(Some("staging")), &v2, "staging");
    let before = calls(t.fake).len();
    t.xtask(&["promote"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "{v2} runs on staging but has not passed staging acceptance"
        ))
        .assert_stderr_has("cargo xtask accept-staging");
    assert_no_mutation(&t.calls_since(before));
    assert_serves(&t.url(None), &v1, "live");

    // It passes (recorded on the service, no revision made); HEAD then moves ahead (V3,
    // never staged): promote makes V2 live, what staging ran and tested, not HEAD.
    let revisions = t.revisions();
    t.xtask(&["accept-staging"]).assert_ok();
    assert_eq!(
        t.revisions(),
        revisions,
        "recording acceptance made a revision"
    );
    let record = t.service()["annotations"]["pymdeploy.dev/record"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(record.contains(&format!("accepted@{v2}@")), "{record}");
    let main = t.svc.read("src/main.rs");
    t.svc
        .write("src/main.rs", &format!("{main}// v3\n"))
        .commit("v3");
    let v3 = t.version();
    let l2 = format!("{}-{v2}-l1", t.svc.name);
    t.xtask(&["promote", "--dry-run"])
        .assert_ok()
        .assert_stdout_has(&format!("add revision {l2} to"));
    t.xtask(&["promote"])
        .assert_ok()
        .assert_stderr_has(&format!("{v2}, what staging runs (HEAD is {v3})"))
        .assert_stderr_has(&format!("{v2} live on"));
    assert_serves(&t.url(None), &v2, "live");
    assert_eq!(t.traffic()[0], (l2, 100, String::new()));
    assert!(
        !t.revisions().iter().any(|r| r.contains(&v3)),
        "HEAD's version was deployed"
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_rollback_twice_never_returns_to_the_version_it_left_unless_named() {
    need_engine();
    let t = Setup::new("runr", shared_fake());
    let quick = [
        "deploy",
        "--no-test",
        "--skip",
        "accept-local",
        "--skip",
        "accept-live",
    ];
    let deploy = |message: &str| -> String {
        let main = t.svc.read("src/main.rs");
        t.svc
            .write("src/main.rs", &format!("{main}// {message}\n"))
            .commit(message);
        t.xtask(&quick).assert_ok();
        let v = t.version();
        assert_serves(&t.url(None), &v, "live");
        v
    };
    let v0 = deploy("v0");
    let c1 = deploy("c1");
    let c2 = deploy("c2");
    // A rollback goes to C1; a second one further back, to V0, never to C2 again.
    t.xtask(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{c1} live again"))
        .assert_stderr_has(&format!("(was {c2})"));
    assert_serves(&t.url(None), &c1, "live");
    t.xtask(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v0} live again"))
        .assert_stderr_has(&format!("(was {c1})"));
    assert_serves(&t.url(None), &v0, "live");
    let table = t.xtask(&["status"]).assert_ok().stdout.clone();
    for v in [&c1, &c2] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("rolled-back ") && l.contains(v.as_str())),
            "{table}"
        );
    }
    // A third would return to a version a rollback left: refused, live as it was; named
    // with --to, it goes.
    let before = calls(t.fake).len();
    t.xtask(&["rollback"])
        .assert_failed()
        .assert_stderr_has("every previous version kept was rolled back from")
        .assert_stderr_has("rollback --to VERSION");
    assert_no_mutation(&t.calls_since(before));
    assert_serves(&t.url(None), &v0, "live");
    t.xtask(&["rollback", "--to", &c2])
        .assert_ok()
        .assert_stderr_has(&format!("{c2} live again"))
        .assert_stderr_has(&format!("(was {v0})"));
    assert_serves(&t.url(None), &c2, "live");

    // destroy --env staging drops the staging tag and nothing else: live serves on. Then
    // --env all deletes the service, every revision and its containers with it; each
    // dry run is the list the run carries out.
    let tags =
        |t: &Setup| -> Vec<String> { t.traffic().into_iter().map(|(.., tag)| tag).collect() };
    assert!(
        tags(&t).iter().any(|tag| tag == "staging"),
        "{:?}",
        t.traffic()
    );
    let plan = t.xtask(&["destroy", "--env", "staging", "--dry-run"]);
    let planned = crate::support::planned_actions(&plan.assert_ok().stdout);
    let gone = t.xtask(&["destroy", "--env", "staging", "--yes"]);
    assert_eq!(
        crate::support::taken_actions(&gone.assert_ok().stderr),
        planned
    );
    assert!(
        !tags(&t).iter().any(|tag| tag == "staging"),
        "{:?}",
        t.traffic()
    );
    assert_serves(&t.url(None), &c2, "live");
    let plan = t.xtask(&["destroy", "--env", "all", "--dry-run"]);
    let planned = crate::support::planned_actions(&plan.assert_ok().stdout);
    assert_eq!(
        planned,
        [format!(
            "delete the Cloud Run service {}, every revision with it (staging's and live's) and the deploy record on it",
            t.svc.name
        )]
    );
    let gone = t.xtask(&["destroy", "--env", "all", "--yes"]);
    assert_eq!(
        crate::support::taken_actions(&gone.assert_ok().stderr),
        planned
    );
    let status = api_raw(
        t.fake,
        "GET",
        &format!(
            "/v2/projects/pym-it/locations/us-central1/services/{}",
            t.svc.name
        ),
        None,
    )
    .0;
    assert_eq!(status, 404, "the service is left");
    crate::support::wait_until(
        "the revisions' containers go",
        Duration::from_secs(60),
        || t.containers().is_empty(),
    );
    t.xtask(&["destroy", "--env", "all", "--yes"])
        .assert_ok()
        .assert_stderr_has("to remove:");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_a_failure_after_any_action_of_promote_leaves_live_as_it_was() {
    need_engine();
    let t = Setup::new("runfp", shared_fake());
    let quick = ["deploy", "--no-test", "--skip", "accept-local"];
    t.xtask(&quick).assert_ok();
    let v1 = t.version();
    let main = t.svc.read("src/main.rs");
    t.svc
        .write("src/main.rs", &format!("{main}// v2\n"))
        .commit("v2");
    let v2 = t.version();
    t.xtask(&[&quick[..], &["--to", "accept-staging"]].concat())
        .assert_ok();
    let planned =
        crate::support::planned_actions(&t.xtask(&["promote", "--dry-run"]).assert_ok().stdout);
    let switch = planned
        .iter()
        .position(|a| a.starts_with(&format!("move {}'s traffic", t.svc.name)))
        .expect("a switch");
    let verify = planned
        .iter()
        .position(|a| a.starts_with("check the service URL"))
        .expect("a check");
    assert_eq!(verify, switch + 1, "{planned:?}");
    let (traffic, revisions, containers) = (t.traffic(), t.revisions(), t.containers());
    let l2 = format!("{}-{v2}-l1", t.svc.name);
    // A failure where each action up to the check of the switch would start: live serves
    // V1, the traffic and its tags are as they were. The one revision promote made (Cloud
    // Run never deletes a service's latest revision; it serves nothing and is reused by
    // the next promote) is the only one added, with its one container.
    for after in 1..=verify {
        let r = t.xtask_with(
            &["promote"],
            &[("PYMDEPLOY_FAIL_AFTER_ACTION", &after.to_string())],
        );
        r.assert_failed()
            .assert_stderr_has(&format!("failure injected after action {after}"))
            .assert_stderr_has(&format!("promoting {v2} failed"))
            .assert_stderr_has(&format!("put back: put {}'s traffic back", t.svc.name));
        if after > switch {
            r.assert_stderr_has(&format!("record {v2} rolled back from, {v1} live"));
        }
        assert_eq!(
            t.traffic(),
            traffic,
            "promote failing after action {after} left traffic or a tag:\n{}",
            r.stderr
        );
        assert_serves(&t.url(None), &v1, "live");
        let added: Vec<String> = t
            .revisions()
            .into_iter()
            .filter(|r| !revisions.contains(r))
            .collect();
        assert_eq!(
            added,
            std::slice::from_ref(&l2),
            "after action {after}:\n{}",
            r.stderr
        );
        let made: Vec<String> = t
            .containers()
            .into_iter()
            .filter(|c| !containers.contains(c))
            .collect();
        assert!(
            made.len() == 1 && made[0].ends_with(&l2),
            "promote failing after action {after} left containers {made:?}:\n{}",
            r.stderr
        );
    }
    // Without a failure, promote makes V2 live on that very revision.
    t.xtask(&["promote"])
        .assert_ok()
        .assert_stderr_has(&format!("{v2} live on"));
    assert_serves(&t.url(None), &v2, "live");
    assert_eq!(t.traffic()[0], (l2, 100, String::new()));
}

/// Ctrl-C once `marker` is printed and the run has waited a moment: it ends within
/// 2 s, with code 130. Returns all it printed.
#[track_caller]
fn interrupt_at(mut run: crate::support::Spawned, marker: &str) -> String {
    run.wait_for(marker);
    std::thread::sleep(Duration::from_millis(500));
    let seen = run.seen.clone();
    let (code, rest, took) = run.interrupt();
    let out = format!("{seen}{rest}");
    assert!(
        took < Duration::from_secs(2),
        "Ctrl-C took {took:?} (health_timeout is 60 s)\n{out}"
    );
    assert_eq!(code, Some(130), "{out}");
    out
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_ctrl_c_while_promote_or_stage_waits_leaves_live_as_it_was_and_answers_at_once() {
    need_engine();
    let t = Setup::new("runint", shared_fake());
    let quick = ["deploy", "--no-test", "--skip", "accept-local"];
    t.xtask(&quick).assert_ok();
    let v1 = t.version();
    // The next version never answers its health on live (its overlay asks a path nobody
    // answers), so promote's check of the `next` tag waits: that is where Ctrl-C comes.
    t.svc
        .write("pym-config.live.yaml", "health_path: /never\n")
        .commit("v2, unhealthy on live");
    let v2 = t.version();
    t.xtask(&[&quick[..], &["--to", "accept-staging"]].concat())
        .assert_ok();
    let traffic = t.traffic();
    let out = interrupt_at(
        t.svc.spawn(&["promote"], &t.env()),
        "- check the `next` tag URL serves",
    );
    assert!(
        out.contains(&format!("promoting {v2} failed"))
            && out.contains(&format!("put back: put {}'s traffic back", t.svc.name)),
        "{out}"
    );
    assert_eq!(t.traffic(), traffic, "the traffic changed:\n{out}");
    assert_serves(&t.url(None), &v1, "live");
    assert_serves(&t.url(Some("staging")), &v2, "staging");

    // Ctrl-C while stage waits for a version that never answers its health on staging:
    // it answers at once and puts the `staging` tag back where it was; live is untouched.
    t.svc
        .write("pym-config.staging.yaml", "health_path: /never\n")
        .commit("v3, unhealthy on staging");
    let v3 = t.version();
    let out = interrupt_at(
        t.svc
            .spawn(&[&quick[..], &["--to", "stage"]].concat(), &t.env()),
        "- check the `staging` tag URL serves",
    );
    assert!(
        out.contains(&format!("put back: put {}'s traffic back", t.svc.name))
            && out.contains(&format!("add revision {}-{v3}-s1", t.svc.name)),
        "{out}"
    );
    assert_eq!(t.traffic(), traffic, "the traffic changed:\n{out}");
    assert_serves(&t.url(None), &v1, "live");
    assert_serves(&t.url(Some("staging")), &v2, "staging");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_deployed_flask_service_moves_from_docker_to_cloud_run_with_one_command() {
    need_engine();
    let s = Setup::with(shared_fake(), |reg| {
        let svc = TestService::deployed_flask("to-run");
        svc.switch_to(
            "gcp-cloud-run",
            &[
                format!("docker_repo={}/team", reg.host),
                "gcp_project=pym-it".into(),
                "gcp_region=us-central1".into(),
            ],
        );
        svc
    });
    // The next deploy, through the service's own xtask, passes the first time.
    let r = s.xtask(&["deploy"]);
    r.assert_ok()
        .assert_stderr_has("3 acceptance tests passed on ");
    let version = s.version();
    crate::support::assert_live_runs(&s.xtask(&["status"]).assert_ok().stdout, &version);
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_canary_steps_traffic_and_aborts_an_erroring_revision_from_monitoring() {
    use crate::canary::{Load, WORK_FAILS_A_FIFTH, WORK_OK, with_work};
    need_engine();
    let t = Setup::new("canary", shared_fake());
    with_work(&t.svc, WORK_OK);
    t.svc
        .write(
            "pym-config.live.yaml",
            "rollout: {strategy: canary, steps: [20, 50], step_seconds: 4, bake_seconds: 3, max_error_rate: 0.05, min_requests: 20}\n",
        )
        .commit("v1: a canary rollout");
    let deploy = ["deploy", "--skip", "test", "--skip", "accept-local"];
    t.xtask(&deploy).assert_ok();
    let v1 = t.version();
    let l1 = format!("{}-{v1}-l1", t.svc.name);
    let url = t.url(None);
    let host = url.split_once("://").unwrap().1.trim_end_matches('/');
    let (host, port) = host.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();

    // v2 fails one request in five on live: aborted at its first step, on the figures
    // Cloud Monitoring gives; all the traffic back on v1 in one update.
    with_work(&t.svc, WORK_FAILS_A_FIFTH);
    t.svc.commit("v2: fails one request in five");
    let v2 = t.version();
    let load = Load::start_at(host, port, 4);
    let before = calls(t.fake).len();
    let r = t.xtask(&deploy);
    r.assert_failed().assert_stderr_has(&format!(
        "the new version {v2} breached a threshold in the 20% step"
    ));
    assert!(!r.stderr.contains("50%"), "{}", r.stderr);
    assert_eq!(
        t.traffic()
            .iter()
            .filter(|(_, p, _)| *p > 0)
            .collect::<Vec<_>>(),
        [&(l1.clone(), 100, String::new())]
    );
    let monitoring = calls(t.fake)[before..]
        .iter()
        .filter(|(m, _)| m == "ListTimeSeries")
        .count();
    assert!(
        monitoring >= 2,
        "the judgement read Cloud Monitoring: {monitoring} calls"
    );
    load.finish();

    // v3, healthy: the traffic steps 20%, 50%, 100%; no request fails.
    with_work(&t.svc, WORK_OK);
    t.svc
        .edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v3: healthy");
    let v3 = t.version();
    let l3 = format!("{}-{v3}-l1", t.svc.name);
    let load = Load::start_at(host, port, 4);
    let env = t.env();
    let mut run = t.svc.spawn(&deploy, &env);
    let mut shares: Vec<i64> = Vec::new();
    let watch = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            let mut seen: Vec<i64> = Vec::new();
            while std::time::Instant::now() < deadline {
                let p: i64 = t
                    .traffic()
                    .iter()
                    .filter(|(r, _, _)| *r == l3)
                    .map(|(_, p, _)| *p)
                    .sum();
                if seen.last() != Some(&p) {
                    seen.push(p);
                }
                if p == 100 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        run.wait_for("record it known-good");
        watcher.join().unwrap()
    });
    shares.extend(watch);
    let said = run.seen.clone();
    let (code, rest) = run.finish();
    assert_eq!(code, Some(0), "{said}{rest}");
    shares.retain(|p| *p > 0);
    assert_eq!(shares, [20, 50, 100], "{said}{rest}");
    crate::canary::assert_passed(&format!("{said}{rest}"), &v3, &[20, 50]);
    let seen = load.finish();
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert!(seen.by_version.contains_key(&v3), "{seen:?}");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn cloud_run_deploys_from_a_github_actions_job_through_workload_identity_federation_alone() {
    need_engine();
    // A local Cloud Run of its own, so every call it sees is this deploy's.
    let fake = own_fake();
    let mut t = Setup::new("runoidc", &fake);
    let issuer = pym_fake_common::oidc::Issuer::start("repo:pymdeploy/it:environment:live")
        .expect("the token issuer starts");
    let provider =
        "projects/123456/locations/global/workloadIdentityPools/github/providers/pymdeploy";
    let deployer = "deployer@pym-it.iam.gserviceaccount.com";
    t.svc
        .edit(
            "pym-config.yaml",
            "gcp_region: us-central1",
            &format!(
                "gcp_region: us-central1\ngcp_workload_identity_provider: {provider}\ngcp_deploy_service_account: {deployer}\ngcp_allow_unauthenticated: false"
            ),
        )
        .commit("deploy as the job");
    // No key and no gcloud login: only the job's token.
    let empty = temp_dir("runoidc-gcloud");
    t.env.retain(|(k, _)| k != "GOOGLE_APPLICATION_CREDENTIALS");
    for (k, v) in [
        ("CLOUDSDK_CONFIG", empty.display().to_string()),
        (
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_STS",
            format!("{}/", fake.endpoint),
        ),
        (
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
            format!("{}/", fake.endpoint),
        ),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", issuer.request_url.clone()),
        (
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            issuer.request_token.clone(),
        ),
    ] {
        t.env.push((k.to_string(), v));
    }
    let r = t.xtask(&["deploy", "--no-test", "--skip", "accept-local"]);
    // A private service: its checks and acceptance tests present identity tokens the
    // deploy service account made, through the same federation.
    r.assert_ok()
        .assert_stderr_has("private: no roles/run.invoker for allUsers");

    // The token was asked for the provider's audience, exchanged at STS, and the
    // deploy service account impersonated with what STS gave.
    let audiences = issuer.audiences();
    assert!(
        !audiences.is_empty()
            && audiences
                .iter()
                .all(|a| *a == format!("https://iam.googleapis.com/{provider}")),
        "{audiences:?}"
    );
    let issued = fake.federation();
    assert!(
        !issued.federated.is_empty()
            && issued
                .federated
                .values()
                .all(|s| s == "repo:pymdeploy/it:environment:live"),
        "{issued:?}"
    );
    assert!(
        !issued.impersonated.is_empty() && issued.impersonated.values().all(|sa| sa == deployer),
        "{issued:?}"
    );
    assert!(
        issued.id_tokens > 0,
        "no identity token was made: {issued:?}"
    );
    // Every Cloud Run call carried the impersonated service account's token, and no
    // token was printed.
    let mut bearers = fake.bearers();
    bearers.remove("test"); // this test's own reads of the service (`api`)
    assert!(
        !bearers.is_empty() && bearers.keys().all(|b| issued.impersonated.contains_key(b)),
        "Cloud Run was called with tokens federation did not give: {bearers:?}"
    );
    for token in issued.federated.keys().chain(issued.impersonated.keys()) {
        r.assert_hides(&[token]);
    }
    r.assert_hides(&[&issuer.request_token]);
}
