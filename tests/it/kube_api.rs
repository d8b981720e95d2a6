//! The local Kubernetes apiserver of `tests/fake-kube` as the real `kubectl` (1.32) expects
//! an apiserver to behave: server-side dry runs that store nothing, nodePorts from the
//! default range. No pod runs here (Deployments have no replicas), so no engine is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use pym_fake_kube::{FakeKube, Options};

use crate::fake_kube::need_kubectl;
use crate::support::{Run, run, temp_dir};

/// A local apiserver, a kubeconfig for it and a namespace of the test's own.
struct Cluster {
    _fake: FakeKube,
    dir: PathBuf,
    kubeconfig: PathBuf,
    ns: String,
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        need_kubectl();
        let fake = FakeKube::start(Options::default()).expect("the local apiserver starts");
        let dir = temp_dir(tag);
        let kubeconfig = fake.kubeconfig(&dir, "pym-it");
        let c = Cluster {
            _fake: fake,
            dir,
            kubeconfig,
            ns: format!("pym-it-{tag}"),
        };
        c.kubectl(&["create", "namespace", &c.ns]).assert_ok();
        c
    }

    fn kubectl(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .args(["-n", &self.ns])
            .args(args);
        run(cmd)
    }

    /// `kubectl ARGS -f FILE` with `yaml` written to a file of the test's directory.
    fn kubectl_f(&self, args: &[&str], yaml: &str) -> Run {
        let file = self
            .dir
            .join(format!("{}.yaml", args.join("-").replace('=', "-")));
        std::fs::write(&file, yaml).unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-f", path_str(&file)]);
        self.kubectl(&all)
    }

    /// `kubectl get ARGS -o jsonpath=PATH`, trimmed.
    fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let jp = format!("jsonpath={path}");
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", &jp]);
        self.kubectl(&all).assert_ok().stdout.trim().to_string()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

fn objects(ns: &str, value: &str, node_port: Option<u16>) -> String {
    let node_port = node_port.map_or(String::new(), |p| format!(", nodePort: {p}"));
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{mode: {value}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080{node_port}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: example.invalid/web:1
        env: [{{name: MODE, value: {value}}}]
"#
    )
}

#[test]
#[cfg_attr(pym_no_kubectl, ignore = "needs kubectl: run .ci/setup (CI runs it)")]
fn kubectl_dry_runs_are_validated_and_store_nothing() {
    let c = Cluster::start("kube-dry");
    c.kubectl_f(&["apply", "--validate=false"], &objects(&c.ns, "one", None))
        .assert_ok();
    // What nothing may change: the namespace's objects (with their resourceVersions) and
    // the list's own resourceVersion, the store's counter.
    let snapshot = || {
        let all = c.kubectl(&["get", "configmaps,services,deployments", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&all.assert_ok().stdout).unwrap();
        let list = format!("/api/v1/namespaces/{}/configmaps", c.ns);
        let list = c.kubectl(&["get", "--raw", &list]);
        let list: serde_json::Value = serde_json::from_str(&list.assert_ok().stdout).unwrap();
        let rv = list["metadata"]["resourceVersion"].clone();
        assert!(rv.is_string(), "a list's resourceVersion: {list}");
        (v["items"].clone(), rv)
    };
    // Settled: the controllers wrote what they write for these (the ReplicaSet, the
    // Deployment's status, the Service's Endpoints) before the first snapshot.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut before = snapshot();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(400));
        let now = snapshot();
        if now == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster does not settle"
        );
        before = now;
    }
    assert_eq!(
        c.jsonpath(&["deployment", "web"], "{.metadata.generation}"),
        "1"
    );

    // `kubectl diff` sends the change as a dry-run patch and shows what it would make.
    let changed = objects(&c.ns, "two", None);
    let diff = c.kubectl_f(&["diff"], &changed);
    assert_eq!(diff.code, Some(1), "diff finds a change: {}", diff.stderr);
    assert!(
        diff.stdout.contains("-  mode: one") && diff.stdout.contains("+  mode: two"),
        "diff shows the ConfigMap's change:\n{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("-          value: one")
            && diff.stdout.contains("+          value: two")
            && diff.stdout.contains("-  generation: 1")
            && diff.stdout.contains("+  generation: 2"),
        "diff shows the Deployment's new env and generation:\n{}",
        diff.stdout
    );
    c.kubectl_f(&["apply", "--validate=false", "--dry-run=server"], &changed)
        .assert_ok()
        .assert_stdout_has("deployment.apps/web configured (server dry run)");
    c.kubectl(&[
        "create",
        "configmap",
        "extra",
        "--from-literal=a=b",
        "--dry-run=server",
    ])
    .assert_ok()
    .assert_stdout_has("configmap/extra created (server dry run)");
    c.kubectl(&["delete", "configmap", "settings", "--dry-run=server"])
        .assert_ok()
        .assert_stdout_has("configmap \"settings\" deleted (server dry run)");
    c.kubectl(&[
        "scale",
        "deployment",
        "web",
        "--replicas=3",
        "--dry-run=server",
    ])
    .assert_ok()
    .assert_stdout_has("deployment.apps/web scaled (server dry run)");
    c.kubectl(&["delete", "service", "web", "--dry-run=server"])
        .assert_ok();
    assert_eq!(snapshot(), before, "a dry run changed the cluster");
    c.kubectl(&["get", "configmap", "extra"])
        .assert_failed()
        .assert_stderr_has("configmaps \"extra\" not found");

    // A dry run is validated as the write would be: a selector that does not match the
    // template is refused, and nothing is stored either.
    let invalid = objects(&c.ns, "one", None).replace(
        "selector: {matchLabels: {app: web}}",
        "selector: {matchLabels: {app: other}}",
    );
    c.kubectl_f(&["apply", "--validate=false", "--dry-run=server"], &invalid)
        .assert_failed()
        .assert_stderr_has("`selector` does not match template `labels`");
    assert_eq!(snapshot(), before, "a refused dry run changed the cluster");

    // kubectl's typed clients send protobuf: decoded for every kind served.
    c.kubectl(&[
        "create",
        "deployment",
        "made",
        "--image=example.invalid/made:1",
        "--replicas=0",
        "--port=8080",
    ])
    .assert_ok()
    .assert_stdout_has("deployment.apps/made created");
    assert_eq!(
        c.jsonpath(&["deployment", "made"], "{.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.selector.matchLabels.app}"),
        "0 example.invalid/made:1 8080 made"
    );
    c.kubectl(&["create", "service", "clusterip", "made", "--tcp=80:http"])
        .assert_ok();
    assert_eq!(
        c.jsonpath(
            &["service", "made"],
            "{.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}"
        ),
        "80 http made"
    );

    // The real write still works after them, and bumps the generation once.
    c.kubectl_f(&["apply", "--validate=false"], &changed)
        .assert_ok();
    assert_eq!(
        c.jsonpath(&["deployment", "web"], "{.metadata.generation}"),
        "2"
    );
}

#[test]
#[cfg_attr(pym_no_kubectl, ignore = "needs kubectl: run .ci/setup (CI runs it)")]
fn node_ports_come_from_the_default_range() {
    let c = Cluster::start("kube-nodeport");
    c.kubectl_f(&["apply", "--validate=false"], &objects(&c.ns, "one", None))
        .assert_ok();
    let port: u16 = c
        .jsonpath(&["service", "web"], "{.spec.ports[0].nodePort}")
        .parse()
        .expect("a nodePort");
    assert!(
        (30000..=32767).contains(&port),
        "nodePort {port} is outside 30000-32767"
    );
    // It answers there (the Service has no ready pod, so the connection is closed).
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let out_of_range = objects(&c.ns, "one", Some(8080)).replace("name: web,", "name: web2,");
    c.kubectl_f(&["apply", "--validate=false"], &out_of_range)
        .assert_failed()
        .assert_stderr_has(
            "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767",
        );
    let taken = objects(&c.ns, "one", Some(port)).replace("name: web,", "name: web3,");
    c.kubectl_f(&["apply", "--validate=false"], &taken)
        .assert_failed()
        .assert_stderr_has(&format!(
            "spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated"
        ));
}

#[test]
#[cfg_attr(pym_no_kubectl, ignore = "needs kubectl: run .ci/setup (CI runs it)")]
fn bearer_tokens_are_checked_over_https() {
    need_kubectl();
    let token = "pym-it-kube-token-Zq83";
    let fake = FakeKube::start(Options {
        tokens: Some(vec![token.to_string()]),
        ..Default::default()
    })
    .expect("the local apiserver starts");
    assert!(fake.url.starts_with("https://127.0.0.1:"), "{}", fake.url);
    let dir = temp_dir("kube-tokens");
    let kubeconfig = fake.kubeconfig(&dir, "pym-it");
    let kubectl = |args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &kubeconfig).args(args);
        run(cmd)
    };
    // The kubeconfig it writes trusts its CA and carries a token it takes.
    kubectl(&["get", "namespace", "default", "-o", "name"])
        .assert_ok()
        .assert_stdout_has("namespace/default");
    kubectl(&[
        "--token",
        token,
        "get",
        "namespace",
        "default",
        "-o",
        "name",
    ])
    .assert_ok();
    kubectl(&["--token", "not-the-token", "get", "namespaces"])
        .assert_failed()
        .assert_stderr_has("error: You must be logged in to the server (Unauthorized)");
    // No client without its CA gets an answer; with it, no token is 401.
    let curl = |args: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args);
        run(cmd)
    };
    curl(&[&format!("{}/api/v1/namespaces", fake.url)])
        .assert_failed()
        .assert_stderr_has("SSL certificate problem");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, fake.ca_pem.as_deref().expect("its CA")).unwrap();
    let ca = ca.display().to_string();
    let no_token = curl(&["--cacert", &ca, &format!("{}/api/v1/namespaces", fake.url)]);
    assert_eq!(no_token.assert_ok().stdout, "401");
    let auth = format!("Authorization: Bearer {token}");
    let with = curl(&[
        "--cacert",
        &ca,
        "-H",
        &auth,
        &format!("{}/api/v1/namespaces", fake.url),
    ]);
    assert_eq!(with.assert_ok().stdout, "200");
}

#[test]
#[cfg_attr(pym_no_kubectl, ignore = "needs kubectl: run .ci/setup (CI runs it)")]
fn apply_validates_with_the_openapi_and_explain_reads_it() {
    let c = Cluster::start("kube-openapi");
    // kubectl's default validation: it finds in /openapi/v3 that PATCH takes
    // fieldValidation, and leaves the check to the server.
    c.kubectl_f(&["apply"], &objects(&c.ns, "one", None))
        .assert_ok()
        .assert_stdout_has("deployment.apps/web created");
    let typo = objects(&c.ns, "two", None)
        .replace("  replicas: 0", "  replica: 0")
        .replace(
            "        image: example.invalid/web:1",
            "        image: example.invalid/web:1\n        imagePull: Always",
        );
    c.kubectl_f(&["apply"], &typo)
        .assert_failed()
        .assert_stderr_has(
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replica\", unknown field \"spec.template.spec.containers[0].imagePull\"",
        );
    // Refused whole: the ConfigMap of the same file changed, the Deployment did not.
    assert_eq!(
        c.jsonpath(
            &["deployment", "web"],
            "{.spec.template.spec.containers[0].env[0].value}"
        ),
        "one"
    );
    let explained = c.kubectl(&["explain", "deployment.spec.replicas"]);
    explained
        .assert_ok()
        .assert_stdout_has("KIND:       Deployment")
        .assert_stdout_has("FIELD: replicas <integer>");
    c.kubectl(&["explain", "services.spec.ports"])
        .assert_ok()
        .assert_stdout_has("FIELD: ports <[]Object>")
        .assert_stdout_has("targetPort");
}

#[test]
#[cfg_attr(pym_no_kubectl, ignore = "needs kubectl: run .ci/setup (CI runs it)")]
fn server_side_apply_keeps_managers_conflicts_and_prunes() {
    let c = Cluster::start("kube-ssa");
    let yaml = objects(&c.ns, "one", None);
    c.kubectl_f(&["apply", "--server-side"], &yaml)
        .assert_ok()
        .assert_stdout_has("deployment.apps/web serverside-applied");
    let managers = || {
        c.jsonpath(
            &["deployment", "web"],
            r#"{range .metadata.managedFields[*]}{.manager}/{.operation} {end}"#,
        )
    };
    assert_eq!(managers(), "kubectl/Apply");
    // Another applier that wants another value for a field kubectl applied: a conflict,
    // named as the apiserver names it, and nothing changes.
    let more = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {}}}\nspec: {{replicas: 3}}\n",
        c.ns
    );
    c.kubectl_f(&["apply", "--server-side", "--field-manager=team-b"], &more)
        .assert_failed()
        .assert_stderr_has(
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas",
        );
    assert_eq!(c.jsonpath(&["deployment", "web"], "{.spec.replicas}"), "0");
    // Forced, it takes the field over.
    c.kubectl_f(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "--force-conflicts",
        ],
        &more,
    )
    .assert_ok();
    assert_eq!(c.jsonpath(&["deployment", "web"], "{.spec.replicas}"), "3");
    assert_eq!(managers(), "kubectl/Apply team-b/Apply");
    let kubectl_fields = c.jsonpath(
        &["deployment", "web"],
        r#"{.metadata.managedFields[?(@.manager=="kubectl")].fieldsV1.f:spec}"#,
    );
    assert!(
        !kubectl_fields.contains("f:replicas"),
        "kubectl still owns replicas: {kubectl_fields}"
    );
    // kubectl applies again without the env it applied, and without replicas: the env
    // goes (it alone owned it), replicas stays team-b's 3.
    let fewer = yaml
        .replace("  replicas: 0\n", "")
        .replace("        env: [{name: MODE, value: one}]\n", "");
    assert_ne!(fewer, yaml);
    c.kubectl_f(&["apply", "--server-side"], &fewer).assert_ok();
    assert_eq!(
        c.jsonpath(
            &["deployment", "web"],
            "{.spec.replicas}/{.spec.template.spec.containers[0].env}"
        ),
        "3/"
    );
    // Other writes are their manager's Update: a patch takes replicas over from team-b
    // without a conflict, and team-b's next apply of another value conflicts with it.
    c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ])
    .assert_ok();
    assert_eq!(managers(), "kubectl/Apply kubectl-patch/Update");
    c.kubectl_f(&["apply", "--server-side", "--field-manager=team-b"], &more)
        .assert_failed()
        .assert_stderr_has(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using apps/v1: .spec.replicas",
        );
}
