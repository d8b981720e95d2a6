//! The gke target, driven through the generated xtask (which enables the `gke` feature)
//! and the `kube` client, against the local apiserver of `tests/fake-kube`: its pods run
//! as real containers pulled from a real registry, its LoadBalancer Services answer on an
//! address of their own, and the real `kubectl` reads what pymdeploy made.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pym_fake_kube::{FakeKube, Options};
use serde_json::{Value, json};

use crate::fake_kube::need_kubectl;
use crate::support::{
    KeepAliveLoop, Registry, RequestLoop, Run, Spawned, TestService, docker, http_get_at,
    need_engine, planned_actions, taken_actions, temp_dir,
};

const SECRET: &str = "pym-it-gke-secret-Wd40";
const PLUGIN_TOKEN: &str = "pym-it-exec-token-Rt55";

/// A service on the gke target with its own registry and local apiserver, and two
/// kubeconfigs: the one pymdeploy uses, whose user is an exec credential plugin (as
/// GKE's `gke-gcloud-auth-plugin`), and a plain one for `kubectl`.
struct Setup {
    fake: FakeKube,
    svc: TestService,
    reg: Registry,
    plain: PathBuf,
    /// The kubeconfig pymdeploy uses, and the exec plugin its user runs.
    kubeconfig: PathBuf,
    plugin: PathBuf,
    env: Vec<(String, String)>,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        Setup::with(tag, |reg| {
            let svc = TestService::new_for(tag, "gke");
            svc.edit(
                "pym-config.yaml",
                "# docker_repo: registry.example.com/team",
                &format!(
                    "docker_repo: {}/team\nkeep_previous: 1\nk8s_prestop_seconds: 2",
                    reg.host
                ),
            );
            svc.write("pym-config.staging.yaml", "k8s_replicas: 1\n")
                .commit("deploy to the local apiserver");
            svc
        })
    }

    /// A registry, a local apiserver that pulls from it, and the service `make` sets up.
    fn with(tag: &str, make: impl FnOnce(&Registry) -> TestService) -> Setup {
        Setup::with_tokeninfo(tag, None, make)
    }

    /// `with`, its apiserver also taking the Google access tokens `tokeninfo` vouches for
    /// (as a GKE cluster does).
    fn with_tokeninfo(
        tag: &str,
        tokeninfo: Option<String>,
        make: impl FnOnce(&Registry) -> TestService,
    ) -> Setup {
        let reg = Registry::start();
        let dir = temp_dir(&format!("{tag}-kube"));
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", reg.user, reg.password));
        std::fs::write(
            dir.join("config.json"),
            json!({"auths": {&reg.host: {"auth": auth}}}).to_string(),
        )
        .unwrap();
        let fake = FakeKube::start(Options {
            docker_config: Some(dir.clone()),
            step_delay: Duration::from_millis(100),
            tokens: Some(vec![PLUGIN_TOKEN.to_string()]),
            google_tokeninfo: tokeninfo,
            ..Default::default()
        })
        .expect("the local apiserver starts");
        let plain = fake.kubeconfig(&dir, "plain");
        let plugin = dir.join("auth-plugin");
        std::fs::write(&plugin, format!("#!/bin/sh\necho '{{\"apiVersion\": \"client.authentication.k8s.io/v1beta1\", \"kind\": \"ExecCredential\", \"status\": {{\"token\": \"{PLUGIN_TOKEN}\"}}}}'\n")).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&plugin)
            .status()
            .unwrap();
        let kubeconfig = dir.join("exec.kubeconfig");
        write_kubeconfig(&kubeconfig, &plugin, &[("pym-it", &fake)]);
        let svc = make(&reg);
        let env = [
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("PYM_IT_GKE_SECRET", SECRET.to_string()),
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
            plain,
            kubeconfig,
            plugin,
            env,
        }
    }

    fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_with(args, &[])
    }

    /// `xtask` with more environment variables.
    fn xtask_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env = self.env();
        env.extend_from_slice(extra);
        let r = self.svc.xtask_env(args, &env);
        r.assert_hides(&[SECRET, PLUGIN_TOKEN, &self.reg.password]);
        r
    }

    /// `pymdeploy ARGS` in the background, in its own process group (see `Spawned`).
    fn spawn(&self, args: &[&str]) -> Spawned {
        self.svc.spawn(args, &self.env())
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Starts `pymdeploy ARGS`, presses Ctrl-C half a second after `marker` was printed,
    /// and checks that the run answered within 2 s, with exit code 130; what it printed
    /// after Ctrl-C.
    #[track_caller]
    fn ctrl_c_at(&self, args: &[&str], marker: &str) -> String {
        let mut run = self.spawn(args);
        run.wait_for(marker);
        std::thread::sleep(Duration::from_millis(500));
        let seen = run.seen.clone();
        let (code, rest, took) = run.interrupt();
        assert!(
            took < Duration::from_secs(2),
            "Ctrl-C took {took:?}\n{seen}{rest}"
        );
        assert_eq!(code, Some(130), "{seen}{rest}");
        rest
    }

    /// What is left of the Deployment `name` (its ReplicaSets, pods, Secret, and the pods'
    /// containers on the engine), waited for up to 60 s while its pods stop (preStop sleep
    /// and grace): empty when it is all gone.
    fn left_of(&self, name: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let objects = self.kubectl(&[
                "get",
                "deployments,replicasets,pods",
                "-l",
                &format!("pymdeploy.dev/deployment={name}"),
                "-o",
                "name",
            ]);
            let mut left: Vec<String> = objects
                .assert_ok()
                .stdout
                .lines()
                .map(str::to_string)
                .collect();
            if self.exists("secret", name) {
                left.push(format!("secret/{name}"));
            }
            let containers = docker(&[
                "ps",
                "-a",
                "--format",
                "{{.Names}}",
                "--filter",
                &format!("name=k8s_app_{name}-"),
            ]);
            left.extend(containers.lines().map(|c| format!("container {c}")));
            if left.is_empty() || std::time::Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The version the live Service selects.
    fn selected(&self) -> Value {
        self.get("service", &self.svc.name)["spec"]["selector"]["app.kubernetes.io/version"].clone()
    }

    fn kubectl(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.plain)
            .args(["-n", &self.svc.name])
            .args(args);
        crate::support::run(cmd)
    }

    #[track_caller]
    fn get(&self, kind: &str, name: &str) -> Value {
        let r = self.kubectl(&["get", kind, name, "-o", "json"]);
        serde_json::from_str(&r.assert_ok().stdout).unwrap()
    }

    /// Whether the object is there; anything but its absence (NotFound) fails the test.
    fn exists(&self, kind: &str, name: &str) -> bool {
        let r = self.kubectl(&["get", kind, name, "-o", "name"]);
        if r.code != Some(0) {
            r.assert_stderr_has("(NotFound)");
        }
        r.code == Some(0)
    }

    fn version(&self) -> String {
        self.svc
            .pym(&["version"])
            .assert_ok()
            .stdout
            .trim()
            .to_string()
    }

    fn deployment(&self, version: &str) -> String {
        format!("{}-{version}", self.svc.name)
    }

    /// The external address of a Service (its LoadBalancer ingress and port).
    fn address(&self, service: &str) -> (String, u16) {
        let s = self.get("service", service);
        (
            s["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .expect("an ingress address")
                .to_string(),
            s["spec"]["ports"][0]["port"].as_u64().unwrap() as u16,
        )
    }

    /// curl's arguments to trust the local apiserver's CA.
    fn curl_tls(&self) -> [String; 2] {
        let ca = self.plain.with_file_name("ca.pem");
        std::fs::write(&ca, self.fake.ca_pem.as_deref().unwrap_or("")).unwrap();
        ["--cacert".to_string(), ca.display().to_string()]
    }

    fn hook(&self, method: &str, what: &str, body: &Value) -> String {
        let out = Command::new("curl")
            .args(self.curl_tls())
            .args([
                "-fsS",
                "-X",
                method,
                &format!("{}/__fake/{what}", self.fake.url),
                "-d",
                &body.to_string(),
            ])
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The API calls so far: (verb, resource).
    fn calls(&self) -> Vec<(String, String)> {
        let out = Command::new("curl")
            .args(self.curl_tls())
            .args(["-fsS", &format!("{}/__fake/calls", self.fake.url)])
            .output()
            .expect("curl runs");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["verb"].as_str().unwrap_or("").to_string(),
                    c["resource"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

/// A kubeconfig with one context per `(name, server)`, the first current, whose user is
/// the exec credential plugin `plugin`.
/// A kubeconfig whose contexts reach these local apiservers (trusting their CAs) with the
/// exec plugin's token.
fn write_kubeconfig(
    path: &std::path::Path,
    plugin: &std::path::Path,
    contexts: &[(&str, &FakeKube)],
) {
    use base64::Engine;
    let clusters: String = contexts
        .iter()
        .map(|(n, fake)| {
            let ca = base64::engine::general_purpose::STANDARD
                .encode(fake.ca_pem.as_deref().expect("an HTTPS apiserver"));
            format!(
                "- name: {n}\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n",
                fake.url
            )
        })
        .collect();
    let named: String = contexts
        .iter()
        .map(|(n, _)| format!("- name: {n}\n  context: {{cluster: {n}, user: plugin}}\n"))
        .collect();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{named}current-context: {}\nusers:\n- name: plugin\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {}\n      interactiveMode: Never\n",
        contexts[0].0,
        plugin.display()
    );
    std::fs::write(path, text).unwrap();
}

/// What `/version` at an address says, asked a few times (a Service spreads connections).
#[track_caller]
fn assert_serves((host, port): &(String, u16), version: &str, env: &str) {
    for _ in 0..4 {
        let (status, body) = http_get_at(host, *port, "/version")
            .unwrap_or_else(|| panic!("{host}:{port} does not answer"));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["version"].as_str(), v["pym_env"].as_str()),
            (Some(version), Some(env)),
            "{host}:{port}"
        );
    }
}

fn env_of(d: &Value, name: &str) -> Value {
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Runs `f` with requests looping on fresh and on keep-alive connections to `addr`, and
/// goes on until `away`'s pods have stopped (their preStop sleep, then the service's own
/// drain, keep-alive clients told to reconnect meanwhile); none may fail. Returns the
/// versions the fresh connections saw.
fn under_load(
    t: &Setup,
    addr: &(String, u16),
    away: &str,
    f: impl FnOnce(),
) -> std::collections::BTreeSet<String> {
    let fresh = RequestLoop::start_at(&addr.0, addr.1);
    let kept = KeepAliveLoop::start_at(&addr.0, addr.1, 4);
    f();
    let pods = format!("name=k8s_app_{}-", t.deployment(away));
    crate::support::wait_until(
        &format!("the pods of {away} stopped"),
        Duration::from_secs(60),
        || docker(&["ps", "-q", "--filter", &pods]).is_empty(),
    );
    let (ok, failures, versions) = fresh.finish();
    let (kept_ok, kept_failures, _) = kept.finish();
    assert!(
        failures.is_empty() && kept_failures.is_empty(),
        "requests failed: {failures:?} {kept_failures:?}"
    );
    assert!(
        ok > 20 && kept_ok > 20,
        "too few requests to tell: {ok} and {kept_ok}"
    );
    versions
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn gke_deploys_blue_green_by_service_selector_rolls_back_and_cleans_up() {
    need_engine();
    need_kubectl();
    let t = Setup::new("gke");
    let (ns, app) = (t.svc.name.clone(), t.svc.name.clone());
    t.svc
        .edit(
            "pym-config.yaml",
            "env_secrets: []",
            "env_secrets: [PYM_IT_GKE_SECRET]\nk8s_memory: 256Mi\nk8s_cpu: 250m\nk8s_replicas: 2",
        )
        .commit("a secret and sizes");

    // The first deploy, every call authenticated by the exec plugin's token over HTTPS
    // (the local apiserver takes no other).
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
    let (live_addr, staging_addr) = (t.address(&app), t.address(&format!("{app}-staging")));
    assert_ne!(live_addr, staging_addr);
    assert_serves(&live_addr, &v1, "live");
    assert_serves(&staging_addr, &v1, "staging");

    // kubectl reads what pymdeploy made.
    t.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{}", t.deployment(&v1)),
        "--timeout=30s",
    ])
    .assert_ok()
    .assert_stdout_has("successfully rolled out");
    let table = t.kubectl(&["get", "deploy,svc"]).assert_ok().stdout.clone();
    assert!(
        table.lines().any(
            |l| l.starts_with(&format!("deployment.apps/{app}-staging ")) && l.contains(" 1/1 ")
        ),
        "{table}"
    );
    assert!(
        table.lines().any(
            |l| l.starts_with(&format!("deployment.apps/{} ", t.deployment(&v1)))
                && l.contains(" 2/2 ")
        ),
        "{table}"
    );
    t.kubectl(&["describe", "deployment", &t.deployment(&v1)])
        .assert_ok()
        .assert_stdout_has("NewReplicaSetAvailable");
    // The live Deployment runs the digest staging ran, with PYM_ENV=live, the secret by
    // reference only, the probes, the preStop sleep, the sizes and the labels.
    let (live, staged) = (
        t.get("deployment", &t.deployment(&v1)),
        t.get("deployment", &format!("{app}-staging")),
    );
    let image = live["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(image.contains("@sha256:"), "{image}");
    assert_eq!(
        staged["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(image.as_str())
    );
    assert_eq!(env_of(&live, "PYM_ENV")["value"], "live");
    assert_eq!(env_of(&staged, "PYM_ENV")["value"], "staging");
    assert_eq!(
        env_of(&live, "PYM_IT_GKE_SECRET")["valueFrom"]["secretKeyRef"]["name"],
        t.deployment(&v1)
    );
    for d in [&live, &staged] {
        assert!(
            !d.to_string().contains(SECRET),
            "the secret's value is in a Deployment: {d}"
        );
    }
    let c = &live["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ping");
    assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 2);
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(
        live["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "pymdeploy"
    );
    assert_eq!(
        live["metadata"]["labels"]["app.kubernetes.io/version"],
        v1.as_str()
    );
    assert_eq!(
        t.get("service", &app)["spec"]["selector"]["app.kubernetes.io/version"],
        v1.as_str()
    );
    let secret = t.get("secret", &t.deployment(&v1));
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["PYM_IT_GKE_SECRET"].as_str().unwrap())
            .unwrap(),
        SECRET.as_bytes()
    );

    // A second version: stage does what its dry run said, live stays on v1.
    t.svc
        .edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v2");
    let v2 = t.version();
    t.xtask(&["deploy", "--no-test", "--to", "push"])
        .assert_ok();
    let dry = t.xtask(&["deploy", "--from", "stage", "--to", "stage", "--dry-run"]);
    let planned = planned_actions(&dry.assert_ok().stdout);
    let staged = t.xtask(&["deploy", "--from", "stage", "--to", "accept-staging"]);
    assert_eq!(
        taken_actions(&staged.assert_ok().stderr),
        planned,
        "the stage did not do what its dry run said:\n{}",
        staged.stderr
    );
    assert_serves(&live_addr, &v1, "live");
    assert_serves(&staging_addr, &v2, "staging");

    // Promote's dry run makes no mutating call.
    let before = t.calls().len();
    let dry = t.xtask(&["promote", "--dry-run"]);
    let planned = planned_actions(&dry.assert_ok().stdout);
    let made = t.calls()[before..].to_vec();
    assert!(
        !made.is_empty()
            && made
                .iter()
                .all(|(verb, _)| ["get", "list", "watch"].contains(&verb.as_str())),
        "a dry run changed something, or read nothing: {made:?}"
    );
    // Promote under load, with a Conflict on the live Service: read again and retried;
    // not one request fails.
    t.hook("POST", "faults", &json!({"verb": "update", "resource": "services", "code": 409, "reason": "Conflict", "message": format!("Operation cannot be fulfilled on services \"{app}\": the object has been modified; please apply your changes to the latest version and try again"), "times": 1}));
    let mut promoted = None;
    let seen = under_load(&t, &live_addr, &v1, || {
        promoted = Some(t.xtask(&["deploy", "--from", "promote"]))
    });
    let promoted = promoted.unwrap();
    promoted
        .assert_ok()
        .assert_stderr_has("(Conflict): reading it again");
    assert_eq!(
        taken_actions(&promoted.stderr),
        planned,
        "the promote did not do what its dry run said:\n{}",
        promoted.stderr
    );
    assert!(seen.contains(&v1) && seen.contains(&v2), "{seen:?}");
    assert_serves(&live_addr, &v2, "live");
    assert_eq!(
        t.get("deployment", &t.deployment(&v1))["spec"]["replicas"],
        0,
        "the version live before is kept, scaled to zero"
    );

    // Rollback under load: v1 scaled back up, selected again.
    let mut rolled = None;
    under_load(&t, &live_addr, &v2, || {
        rolled = Some(t.xtask(&["rollback"]))
    });
    rolled
        .unwrap()
        .assert_ok()
        .assert_stderr_has(&format!("{v1} live again"));
    assert_serves(&live_addr, &v1, "live");
    assert_eq!(
        t.get("deployment", &t.deployment(&v2))["spec"]["replicas"],
        0
    );
    let status = t.xtask(&["status"]);
    let table = &status.assert_ok().stdout;
    assert!(
        table.lines().any(|l| l.starts_with("live ")
            && l.contains(&t.deployment(&v1))
            && l.contains(" 2/2 ")
            && l.contains(&format!("service/{app}"))),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("previous ")
            && l.contains(&t.deployment(&v2))
            && l.contains(" 0/0 ")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("staging ") && l.contains(&v2)),
        "{table}"
    );

    // v2 again, then a third version: with keep_previous 1, v2 is kept and v1 deleted with
    // its Secret; cleanup finds nothing more to delete.
    // A standalone promote asks for what staging runs by name: v2, a rollback left it.
    t.xtask(&["promote"]).assert_ok();
    assert_serves(&live_addr, &v2, "live");
    t.svc
        .edit("src/main.rs", "\"no such route\"", "\"nothing here\"")
        .commit("v3");
    let v3 = t.version();
    t.xtask(&["deploy", "--no-test"]).assert_ok();
    assert_serves(&live_addr, &v3, "live");
    assert!(
        !t.exists("deployment", &t.deployment(&v1)) && !t.exists("secret", &t.deployment(&v1)),
        "v1 is beyond keep_previous and was not deleted"
    );
    assert!(t.exists("deployment", &t.deployment(&v2)));
    let cleanup = t.xtask(&["cleanup", "--execute"]);
    cleanup.assert_stderr_has(&format!("0 old deployments of {} cleaned", t.svc.name));
    assert!(
        cleanup
            .assert_ok()
            .stdout
            .contains(&format!("keep {}", t.deployment(&v2))),
        "{}",
        cleanup.stdout
    );
    assert_eq!(
        ns,
        t.get("deployment", &t.deployment(&v3))["metadata"]["namespace"]
    );
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn gke_failures_leave_live_alone_and_say_why() {
    need_engine();
    need_kubectl();
    let t = Setup::new("gkef");
    let app = t.svc.name.clone();
    // Staging without an external address: its acceptance tests go through a port-forward.
    let staging = |extra: &str| format!("k8s_replicas: 1\nk8s_service_type: ClusterIP\n{extra}");
    t.svc
        .write("pym-config.staging.yaml", &staging(""))
        .commit("a private staging");

    // A context the kubeconfig lacks: refused before the first step, with the line that
    // adds it.
    t.svc
        .write(
            "pym-config.live.yaml",
            "gke_cluster: prod\ngcp_project: acme\ngcp_region: europe-west1\n",
        )
        .commit("a live cluster");
    let r = t.xtask(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("the kubeconfig has no context `gke_acme_europe-west1_prod`")
        .assert_stderr_has(
            "gcloud container clusters get-credentials prod --region europe-west1 --project acme",
        );
    assert!(!r.stderr.contains("==> test"), "a step ran: {}", r.stderr);
    assert!(
        t.calls().is_empty(),
        "the cluster was called: {:?}",
        t.calls()
    );
    std::fs::remove_file(t.svc.path("pym-config.live.yaml")).unwrap();
    t.svc.commit("one cluster");
    let r = t.xtask(&["deploy", "--no-test"]);
    r.assert_ok()
        .assert_stderr_has("acceptance tests passed on 127.0.0.1:");
    let v1 = t.version();
    let live_addr = t.address(&app);
    assert_serves(&live_addr, &v1, "live");
    assert_eq!(
        t.get("service", &format!("{app}-staging"))["spec"]["type"],
        "ClusterIP"
    );
    assert!(
        t.calls()
            .iter()
            .any(|(verb, resource)| verb == "get" && resource == "pods/portforward"),
        "no port-forward: {:?}",
        t.calls()
    );

    // Staging's acceptance tests fail: live is not touched.
    t.svc
        .write(
            "pym-config.staging.yaml",
            &staging("accept_command: \"false\"\n"),
        )
        .commit("staging acceptance fails");
    t.xtask(&["deploy", "--no-test"])
        .assert_failed()
        .assert_stderr_has("step `accept-staging` failed")
        .assert_stderr_has("the acceptance tests failed");
    assert_eq!(
        t.get("service", &app)["spec"]["selector"]["app.kubernetes.io/version"],
        v1.as_str()
    );
    assert_serves(&live_addr, &v1, "live");
    let v2 = t.version();
    assert!(!t.exists("deployment", &t.deployment(&v2)));

    // Pods that never become ready: the rollout ends at its progress deadline, with the
    // pods' events and logs; staging is put back as it was; live untouched.
    t.svc
        .write(
            "pym-config.staging.yaml",
            &staging("health_path: /never\nk8s_timeout: 10\n"),
        )
        .commit("staging pods never ready");
    t.xtask(&["deploy", "--no-test", "--to", "push"])
        .assert_ok();
    let r = t.xtask(&["deploy", "--from", "stage"]);
    r.assert_failed()
        .assert_stderr_has("exceeded its progress deadline")
        .assert_stderr_has("events of pod")
        .assert_stderr_has("probe failed")
        .assert_stderr_has("last log lines of pod");
    r.assert_stderr_has(&format!(
        "- undo: put deployment {app}/{app}-staging back as it was"
    ))
    .assert_stderr_has(&format!(
        "put back: put deployment {app}/{app}-staging back as it was"
    ));
    let staged = t.get("deployment", &format!("{app}-staging"));
    assert_eq!(
        staged["metadata"]["labels"]["app.kubernetes.io/version"],
        v2.as_str(),
        "staging was not put back"
    );
    t.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{app}-staging"),
        "--timeout=60s",
    ])
    .assert_ok();
    assert_serves(&live_addr, &v1, "live");

    // Forbidden: the error names the verb and the resource, and what to ask for.
    let message = format!(
        "deployments.apps \"{app}-staging\" is forbidden: User \"dev@example.com\" cannot update resource \"deployments\" in API group \"apps\" in the namespace \"{app}\""
    );
    t.hook("POST", "faults", &json!({"verb": "update", "resource": "deployments", "code": 403, "reason": "Forbidden", "message": message, "times": 1}));
    let r = t.xtask(&["deploy", "--from", "stage", "--to", "stage"]);
    r.assert_failed()
        .assert_stderr_has("refused to update deployments")
        .assert_stderr_has(&message)
        .assert_stderr_has(&format!("kubectl auth can-i update deployments -n {app}"));
    assert_serves(&live_addr, &v1, "live");
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn gke_stages_on_one_cluster_and_promotes_on_another() {
    need_engine();
    need_kubectl();
    // PyMacaron's separate staging and live clusters: the staging overlay names the
    // staging cluster's context; promote reads the staged digest there and runs it here.
    let t = Setup::new("gkes");
    let app = t.svc.name.clone();
    let dir = t.plain.parent().unwrap().to_path_buf();
    let staging_cluster = FakeKube::start(Options {
        docker_config: Some(dir.clone()),
        step_delay: Duration::from_millis(100),
        tokens: Some(vec![PLUGIN_TOKEN.to_string()]),
        ..Default::default()
    })
    .expect("a second local apiserver");
    write_kubeconfig(
        &t.kubeconfig,
        &t.plugin,
        &[
            ("live-cluster", &t.fake),
            ("staging-cluster", &staging_cluster),
        ],
    );
    t.svc
        .write(
            "pym-config.staging.yaml",
            "k8s_replicas: 1\nk8s_context: staging-cluster\n",
        )
        .commit("staging on its own cluster");
    let r = t.xtask(&["deploy", "--no-test"]);
    r.assert_ok();
    let v1 = t.version();
    let on = |fake: &FakeKube, kind: &str, name: &str| {
        let config = fake.kubeconfig(&dir, &format!("check-{}", fake.port));
        Command::new("kubectl")
            .env("KUBECONFIG", &config)
            .args(["-n", &app, "get", kind, name, "-o", "name"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        on(&staging_cluster, "deployment", &format!("{app}-staging"))
            && !on(&t.fake, "deployment", &format!("{app}-staging")),
        "staging is not on its own cluster"
    );
    assert!(
        on(&t.fake, "deployment", &t.deployment(&v1))
            && !on(&staging_cluster, "deployment", &t.deployment(&v1)),
        "live is not on the live cluster"
    );
    assert_serves(&t.address(&app), &v1, "live");
    let status = t.xtask(&["status"]);
    assert!(
        status
            .assert_ok()
            .stdout
            .lines()
            .any(|l| l.starts_with("staging ") && l.contains(&v1)),
        "{}",
        status.stdout
    );

    // destroy takes each environment off its own cluster, the Services first; the deploy
    // record stays. Its dry run is the list the run then carries out.
    let plan = t.xtask(&["destroy", "--env", "all", "--dry-run"]);
    let planned = crate::support::planned_actions(&plan.assert_ok().stdout);
    assert_eq!(
        planned,
        [
            format!("delete the staging service {app}/{app}-staging"),
            format!("delete {app}/{app}-staging and its secret"),
            format!("delete the live service {app}/{app}"),
            format!("delete {app}/{} and its secret", t.deployment(&v1)),
        ]
    );
    let gone = t.xtask(&["destroy", "--env", "all", "--yes"]);
    gone.assert_ok();
    assert_eq!(crate::support::taken_actions(&gone.stderr), planned);
    for (cluster, kind, name) in [
        (&staging_cluster, "service", format!("{app}-staging")),
        (&staging_cluster, "deployment", format!("{app}-staging")),
        (&t.fake, "service", app.clone()),
        (&t.fake, "deployment", t.deployment(&v1)),
    ] {
        assert!(!on(cluster, kind, &name), "{kind} {name} is left");
    }
    assert!(
        on(&t.fake, "configmap", &format!("{app}-deploy-record")),
        "the deploy record went"
    );
    t.xtask(&["destroy", "--env", "all", "--yes"])
        .assert_ok()
        .assert_stderr_has(&format!("to remove: {app} has no staging and live on gke"));
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn gke_promotes_what_staging_runs_once_it_passed_acceptance_and_rollback_never_returns() {
    need_engine();
    need_kubectl();
    let t = Setup::new("gkep");
    let app = t.svc.name.clone();
    t.xtask(&["deploy", "--no-test"]).assert_ok();
    let v1 = t.version();
    let live_addr = t.address(&app);
    assert_serves(&live_addr, &v1, "live");

    // V2 staged, its acceptance never run: promote refuses, live stays V1.
    t.svc
        .edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v2");
    let v2 = t.version();
    t.xtask(&["deploy", "--no-test", "--to", "stage"])
        .assert_ok();
    t.xtask(&["promote"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "{v2} runs on staging but has not passed staging acceptance"
        ))
        .assert_stderr_has("cargo xtask accept-staging");
    assert_serves(&live_addr, &v1, "live");
    assert!(!t.exists("deployment", &t.deployment(&v2)));

    // It passes; HEAD then moves ahead (V3, never staged): promote makes V2 live, what
    // staging ran and tested, not HEAD.
    t.svc.write("NOTES.md", "v3\n").commit("v3");
    let v3 = t.version();
    assert_ne!(v2, v3);
    t.xtask(&["accept-staging"]).assert_ok();
    let record = t.get("configmap", &format!("{app}-deploy-record"));
    assert!(
        record["data"]["history"].as_str().is_some_and(
            |h| h.contains(&format!("accepted@{v2}@")) && h.contains(&format!("live@{v1}@"))
        ),
        "{record}"
    );
    t.xtask(&["promote", "--dry-run"])
        .assert_ok()
        .assert_stdout_has(&format!("deploy {app}/{}: {v2} (", t.deployment(&v2)));
    t.xtask(&["promote"])
        .assert_ok()
        .assert_stderr_has(&format!("{v2}, what staging runs (HEAD is {v3})"))
        .assert_stderr_has(&format!("{v2} live on"));
    assert_serves(&live_addr, &v2, "live");
    assert!(!t.exists("deployment", &t.deployment(&v3)));

    // Rollback to V1; a second one would return to V2, which a rollback left: refused,
    // naming --to, live as it was; named with --to, it goes.
    t.xtask(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v1} live again"));
    assert_serves(&live_addr, &v1, "live");
    t.xtask(&["rollback"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "every previous version kept was rolled back from: {v2}"
        ))
        .assert_stderr_has("rollback --to VERSION");
    assert_serves(&live_addr, &v1, "live");
    t.xtask(&["rollback", "--to", &v2])
        .assert_ok()
        .assert_stderr_has(&format!("{v2} live again on {app}/{app} (was {v1})"));
    assert_serves(&live_addr, &v2, "live");
    let status = t.xtask(&["status"]);
    assert!(
        status
            .assert_ok()
            .stdout
            .lines()
            .any(|l| l.starts_with("live ") && l.contains(&t.deployment(&v2))),
        "{}",
        status.stdout
    );

    // A cluster an older pymdeploy deployed to has only the live Service's annotations:
    // they are read, converted (V1 rolled back from: refused), and the record starts from
    // them.
    t.kubectl(&["delete", "configmap", &format!("{app}-deploy-record")])
        .assert_ok();
    t.kubectl(&[
        "annotate",
        "service",
        &app,
        &format!("pymdeploy.dev/live-history={v1},{v2}"),
        &format!("pymdeploy.dev/rolled-back={v1}"),
    ])
    .assert_ok();
    t.xtask(&["rollback"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "every previous version kept was rolled back from: {v1}"
        ));
    assert_serves(&live_addr, &v2, "live");
    t.xtask(&["rollback", "--to", &v1]).assert_ok();
    assert_serves(&live_addr, &v1, "live");
    let record = t.get("configmap", &format!("{app}-deploy-record"));
    let history = record["data"]["history"].as_str().unwrap_or_default();
    assert!(
        history.starts_with(&format!(
            "live@{v1}@0 live@{v2}@0 rolled-back@{v1}@0 rolled-back@{v2}@"
        )) && history.contains(&format!("live@{v1}@1")),
        "{history}"
    );
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn gke_a_failure_after_any_action_of_promote_leaves_live_as_it_was_or_as_verified() {
    need_engine();
    need_kubectl();
    let t = Setup::new("gkefp");
    let app = t.svc.name.clone();
    t.svc
        .edit(
            "pym-config.yaml",
            "env_secrets: []",
            "env_secrets: [PYM_IT_GKE_SECRET]",
        )
        .commit("a secret");
    t.xtask(&["deploy", "--no-test"]).assert_ok();
    let v1 = t.version();
    let live_addr = t.address(&app);
    t.svc
        .edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v2");
    let v2 = t.version();
    let new = t.deployment(&v2);
    t.xtask(&["deploy", "--no-test", "--to", "accept-staging"])
        .assert_ok();
    let planned = planned_actions(&t.xtask(&["promote", "--dry-run"]).assert_ok().stdout);
    let switch = planned
        .iter()
        .position(|a| a.starts_with(&format!("switch service {app}/{app} from {v1} to {v2}")))
        .unwrap_or_else(|| panic!("no switch: {planned:?}"));
    let verify = planned
        .iter()
        .position(|a| a.starts_with("check live serves"))
        .unwrap_or_else(|| panic!("no check: {planned:?}"));
    assert_eq!(verify, switch + 1, "{planned:?}");
    assert!(
        planned[0].starts_with(&format!("put the live env_secrets in secret {app}/{new}")),
        "{planned:?}"
    );
    // A failure where each action up to the check would start (the check itself
    // included): live serves V1 and selects it, and nothing of V2 is left on live.
    for after in 1..=verify {
        let r = t.xtask_with(
            &["promote"],
            &[("PYMDEPLOY_FAIL_AFTER_ACTION", &after.to_string())],
        );
        r.assert_failed()
            .assert_stderr_has(&format!("failure injected after action {after}"))
            .assert_stderr_has("put back: ");
        if after > switch {
            r.assert_stderr_has(&format!(
                "put back: switch service {app}/{app} back from {v2} to {v1}"
            ));
        }
        assert_eq!(
            t.selected(),
            v1.as_str(),
            "after action {after}:\n{}",
            r.stderr
        );
        assert_serves(&live_addr, &v1, "live");
        let left = t.left_of(&new);
        assert!(
            left.is_empty(),
            "promote failing after action {after} left {left:?}:\n{}",
            r.stderr
        );
    }
    // After the check the switch is verified and kept: a failure then fails the run, and
    // live serves V2.
    let r = t.xtask_with(
        &["promote"],
        &[("PYMDEPLOY_FAIL_AFTER_ACTION", &(verify + 1).to_string())],
    );
    r.assert_failed()
        .assert_stderr_has(&format!("failure injected after action {}", verify + 1))
        .assert_stderr_has("the switch was verified and is kept");
    assert_eq!(t.selected(), v2.as_str(), "{}", r.stderr);
    assert_serves(&live_addr, &v2, "live");
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn gke_ctrl_c_while_promote_or_stage_waits_leaves_live_as_it_was_and_answers_at_once() {
    need_engine();
    need_kubectl();
    let t = Setup::new("gkei");
    let app = t.svc.name.clone();
    t.xtask(&["deploy", "--no-test"]).assert_ok();
    let v1 = t.version();
    let live_addr = t.address(&app);
    // The next version never becomes ready on live (its overlay probes a path nobody
    // answers), so promote waits for its rollout: that is where Ctrl-C comes.
    t.svc
        .write("pym-config.live.yaml", "health_path: /never\n")
        .commit("v2, never ready on live");
    let v2 = t.version();
    let new = t.deployment(&v2);
    let rest = t.ctrl_c_at(
        &["deploy", "--no-test"],
        &format!("- wait for {app}/{new} to roll out"),
    );
    assert!(
        rest.contains(&format!("put back: delete the new deployment {app}/{new}")),
        "{rest}"
    );
    assert_eq!(t.selected(), v1.as_str(), "live changed:\n{rest}");
    assert_serves(&live_addr, &v1, "live");
    let left = t.left_of(&new);
    assert!(
        left.is_empty(),
        "the interrupted promote left {left:?}:\n{rest}"
    );

    // Ctrl-C while stage waits for a version that never becomes ready on staging: it
    // answers at once and puts the staging Deployment back; live is untouched.
    t.svc
        .write(
            "pym-config.staging.yaml",
            "k8s_replicas: 1\nhealth_path: /never\n",
        )
        .commit("v3, never ready on staging");
    let v3 = t.version();
    let rest = t.ctrl_c_at(
        &[
            "deploy",
            "--no-test",
            "--skip",
            "accept-local",
            "--to",
            "stage",
        ],
        &format!("- wait for {app}/{app}-staging to roll out"),
    );
    assert!(
        rest.contains(&format!(
            "put back: put deployment {app}/{app}-staging back as it was"
        )),
        "{rest}"
    );
    assert_eq!(
        t.get("deployment", &format!("{app}-staging"))["metadata"]["labels"]["app.kubernetes.io/version"],
        v2.as_str(),
        "staging was not put back:\n{rest}"
    );
    assert_eq!(t.selected(), v1.as_str(), "live changed:\n{rest}");
    assert_serves(&live_addr, &v1, "live");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let staged_v3 = || {
        t.kubectl(&[
            "get",
            "pods",
            "-l",
            &format!("pymdeploy.dev/deployment={app}-staging,app.kubernetes.io/version={v3}"),
            "-o",
            "name",
        ])
        .assert_ok()
        .stdout
        .trim()
        .to_string()
    };
    while !staged_v3().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(staged_v3(), "", "the interrupted stage left pods of {v3}");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_deployed_flask_service_moves_from_docker_to_kubernetes_with_one_command() {
    need_engine();
    let s = Setup::with("to-kube", |reg| {
        let svc = TestService::deployed_flask("to-kube");
        svc.switch_to("gke", &[format!("docker_repo={}/team", reg.host)]);
        svc
    });
    let r = s.xtask(&["deploy"]);
    r.assert_ok()
        .assert_stderr_has("3 acceptance tests passed on ");
    let version = s.svc.pym(&["version"]).stdout.trim().to_string();
    crate::support::assert_live_runs(&s.xtask(&["status"]).assert_ok().stdout, &version);
}

/// Request counters a test serves for Prometheus to scrape, as an instrumented service's
/// pods would: `http_requests_total{namespace, pod, status}` growing at the rates set
/// per pod (ok and 5xx answers a second).
struct Exporter {
    port: u16,
    rates: Rates,
}

/// Per pod: its namespace and name, ok and 5xx answers a second, and since when.
type Rates = std::sync::Arc<std::sync::Mutex<Vec<(String, String, f64, f64, std::time::Instant)>>>;

impl Exporter {
    fn start() -> Exporter {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rates: Rates = Default::default();
        let shared = rates.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let mut body = String::from("# TYPE http_requests_total counter\n");
                for (ns, pod, ok, err, since) in shared.lock().unwrap().iter() {
                    let s = since.elapsed().as_secs_f64();
                    for (status, rate) in [("200", ok), ("500", err)] {
                        body.push_str(&format!(
                            "http_requests_total{{namespace=\"{ns}\",pod=\"{pod}\",status=\"{status}\"}} {}\n",
                            (rate * s).floor()
                        ));
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Exporter { port, rates }
    }

    /// The pod `pod` answers `ok` requests a second and `err` 5xx, from now.
    fn serve(&self, ns: &str, pod: &str, ok: f64, err: f64) {
        self.rates.lock().unwrap().push((
            ns.into(),
            pod.into(),
            ok,
            err,
            std::time::Instant::now(),
        ));
    }
}

/// Debian's Prometheus, scraping `target` every second, on a port of its own; stopped
/// on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = temp_dir("prometheus");
        let port = crate::support::free_port();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!("global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: pods\n  honor_labels: true\n  static_configs:\n  - targets: ['127.0.0.1:{target}']\n"),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("Debian's prometheus runs (.ci/setup installs it)");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        crate::support::wait_until("Prometheus ready", Duration::from_secs(30), || {
            http_get_at("127.0.0.1", port, "/-/ready").is_some_and(|(s, _)| s == 200)
        });
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn gke_canary_steps_by_replica_ratio_aborts_a_crash_looping_canary_and_judges_by_prometheus() {
    need_engine();
    need_kubectl();
    let t = Setup::new("kcanary");
    let ns = t.svc.name.clone();
    let rollout = |extra: &str| {
        format!(
            "k8s_replicas: 3\nrollout: {{strategy: canary, steps: [25, 50], step_seconds: 6, bake_seconds: 3, max_error_rate: 0.05, min_requests: 20{extra}}}\n"
        )
    };
    t.svc
        .write("pym-config.live.yaml", &rollout(""))
        .commit("v1: a canary rollout, 3 live pods");
    let deploy = ["deploy", "--skip", "test", "--skip", "accept-local"];
    t.xtask(&deploy).assert_ok();
    let v1 = t.version();
    let addr = t.address(&t.svc.name);

    // v2 crashes five seconds after it starts on live: its pod restarts during the first
    // step, which is a breach; the Service selects v1 alone again, v2's Deployment goes.
    t.svc.edit(
        "src/main.rs",
        "    let info = Arc::new(Info::from_env());",
        "    let info = Arc::new(Info::from_env());\n    if info.pym_env == \"live\" {\n        std::thread::spawn(|| {\n            std::thread::sleep(Duration::from_secs(5));\n            std::process::exit(3)\n        });\n    }",
    );
    t.svc
        .write(
            "pym-config.live.yaml",
            &rollout(", step_seconds: 12").replace("step_seconds: 6, ", ""),
        )
        .commit("v2: crashes on live");
    let v2 = t.version();
    let r = t.xtask(&deploy);
    r.assert_failed().assert_stderr_has(&format!(
        "the new version {v2} breached a threshold in the 25% step"
    ));
    assert!(r.stderr.contains("restarted"), "{}", r.stderr);
    assert_eq!(t.selected(), json!(v1));
    assert!(!t.exists("deployment", &t.deployment(&v2)));
    assert_serves(&addr, &v1, "live");

    // v3 runs well but its requests fail, as Prometheus counts them (scraped from what
    // the test serves for its pods): aborted at the first step on those figures.
    let exporter = Exporter::start();
    let prometheus = Prometheus::start(exporter.port);
    t.svc.edit(
        "src/main.rs",
        "            std::process::exit(3)",
        "            let _ = 3;",
    );
    let with_prometheus = rollout(&format!(", prometheus_url: '{}'", prometheus.url));
    t.svc
        .write("pym-config.live.yaml", &with_prometheus)
        .commit("v3: its requests fail, as Prometheus says");
    let v3 = t.version();
    exporter.serve(&ns, &format!("{}-abc12", t.deployment(&v3)), 40.0, 20.0);
    let r = t.xtask(&deploy);
    r.assert_failed().assert_stderr_has(&format!(
        "the new version {v3} breached a threshold in the 25% step: errors"
    ));
    assert!(
        r.stderr
            .contains(&format!("Prometheus at {}", prometheus.url)),
        "{}",
        r.stderr
    );
    assert_eq!(t.selected(), json!(v1));

    // v4, healthy on Prometheus too: one canary pod beside three (25%), then three (50%),
    // then the switch and the bake; no request fails.
    t.svc
        .edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v4: healthy");
    let v4 = t.version();
    exporter.serve(&ns, &format!("{}-abc12", t.deployment(&v4)), 40.0, 0.0);
    let mut replicas: Vec<i64> = Vec::new();
    let versions = under_load(&t, &addr, &v1, || {
        let mut run = t.spawn(&deploy);
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let deadline = std::time::Instant::now() + Duration::from_secs(300);
                let mut seen: Vec<i64> = Vec::new();
                while std::time::Instant::now() < deadline {
                    let r = t.kubectl(&[
                        "get",
                        "deployment",
                        &t.deployment(&v4),
                        "-o",
                        "jsonpath={.spec.replicas}",
                    ]);
                    if let Ok(n) = r.stdout.trim().parse::<i64>()
                        && seen.last() != Some(&n)
                    {
                        seen.push(n);
                    }
                    if t.selected() == json!(v4) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                seen
            });
            run.wait_for(&format!("bake {v4} at 100%"));
            replicas = watcher.join().unwrap();
        });
        let said = run.seen.clone();
        let (code, rest) = run.finish();
        assert_eq!(code, Some(0), "{said}{rest}");
        crate::canary::assert_passed(&format!("{said}{rest}"), &v4, &[25, 50]);
    });
    assert_eq!(replicas, [1, 3], "canary pods at 25% and 50% beside 3 live");
    assert!(
        versions.contains(&v4) && versions.contains(&v1),
        "{versions:?}"
    );
    assert_eq!(t.selected(), json!(v4));
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn gke_deploys_from_a_github_actions_job_with_the_google_identity_it_federates() {
    need_engine();
    // Google's side (STS, IAM Credentials, tokeninfo), and GitHub's token issuer.
    let google = pym_fake_gcp::FakeGcp::start(pym_fake_gcp::Options::default())
        .expect("the local Google APIs start");
    let issuer = pym_fake_common::oidc::Issuer::start("repo:pymdeploy/it:environment:live")
        .expect("the token issuer starts");
    let deployer = "deployer@pym-it.iam.gserviceaccount.com";
    let t = Setup::with_tokeninfo(
        "gkeoidc",
        Some(format!("{}/tokeninfo", google.endpoint)),
        |reg| {
            let svc = TestService::new_for("gkeoidc", "gke");
            svc.edit(
                "pym-config.yaml",
                "# docker_repo: registry.example.com/team",
                &format!(
                    "docker_repo: {}/team\nkeep_previous: 1\nk8s_prestop_seconds: 2\ngcp_workload_identity_provider: projects/123456/locations/global/workloadIdentityPools/github/providers/pymdeploy\ngcp_deploy_service_account: {deployer}",
                    reg.host
                ),
            );
            svc.write("pym-config.staging.yaml", "k8s_replicas: 1\n")
                .commit("deploy to the local apiserver as the job");
            svc
        },
    );
    // The cluster's user is gcloud's plugin, which cannot run here (gcloud is not logged
    // in on a CI runner): the deploy must not need it.
    let plugin = t.plugin.with_file_name("gke-gcloud-auth-plugin");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho 'ERROR: gcloud is not logged in' >&2\nexit 1\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&plugin)
        .status()
        .unwrap();
    write_kubeconfig(&t.kubeconfig, &plugin, &[("pym-it", &t.fake)]);
    let r = t.xtask_with(
        &["deploy", "--no-test", "--skip", "accept-local"],
        &[
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_STS",
                &format!("{}/", google.endpoint),
            ),
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
                &format!("{}/", google.endpoint),
            ),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &issuer.request_url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &issuer.request_token),
        ],
    );
    r.assert_ok();
    // Every call to the cluster carried the deploy service account's token, which the
    // job's identity token was exchanged for (read before this test's own kubectl).
    let bearers = t.fake.bearers();
    assert_eq!(t.selected(), Value::String(t.svc.xtask_version()));
    let issued = google.federation();
    assert!(
        !issued.impersonated.is_empty() && issued.impersonated.values().all(|sa| sa == deployer),
        "{issued:?}"
    );
    assert!(
        !bearers.is_empty() && bearers.keys().all(|b| issued.impersonated.contains_key(b)),
        "the cluster was called with tokens federation did not give: {bearers:?}"
    );
    for token in issued.federated.keys().chain(issued.impersonated.keys()) {
        r.assert_hides(&[token]);
    }
}
