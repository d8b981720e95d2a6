//! The local Kubernetes apiserver of `tests/fake-kube`, read and driven by the real
//! `kubectl` (1.32 on these machines) as users will look at what pymdeploy does there:
//! create, `rollout status` (success and the progress deadline), `get`, `describe
//! deployment`, `logs`, a Service reaching ready pods, its Endpoints and EndpointSlice,
//! `port-forward` over both SPDY transports, the `proxy` subresources of pods and services,
//! a terminating pod's `preStop` hook, a Forbidden answer, and a deleted namespace leaving
//! no container behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use pym_fake_kube::{FakeKube, Options};

use crate::support::{Run, docker, http_get, need_engine, run, temp_dir};

const SECRET: &str = "pym-it-kube-secret-Hq71";

const SERVER: &str = r#"import os, signal, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
port = int(os.environ.get("PORT", "8080"))
fail = os.environ.get("FAIL") == "1"

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        code = 500 if fail and self.path == "/ping" else 200
        body = f"pong from {socket.gethostname()} version={os.environ.get('VERSION', '?')} secret-set={bool(os.environ.get('SECRET'))}\n".encode()
        if self.path == "/big":
            body = b"x" * 200000
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("request: " + fmt % args, flush=True)

print(f"listening on {port}", flush=True)
ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"#;

/// Fails the test unless `kubectl` runs here; its tests say
/// `#[cfg_attr(pym_no_kubectl, ignore = ...)]` (see `support::need_engine`).
pub fn need_kubectl() {
    assert!(
        Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "`kubectl` does not run here: the Kubernetes tests need it (1.32 or newer on PATH)"
    );
}

/// Images of the test server: healthy, and one whose `/ping` answers 500. Removed on drop.
struct Images(String);

impl Images {
    fn build() -> Images {
        let dir = temp_dir("kube-img");
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        let tag = format!("pym-it-kube-{}", std::process::id());
        for (name, env) in [("v1", "VERSION=v1"), ("broken", "VERSION=v2 FAIL=1")] {
            std::fs::write(dir.join("Dockerfile"), format!("FROM python:3.11-slim\nCOPY server.py /server.py\nENV {env}\nCMD [\"python3\", \"-u\", \"/server.py\"]\n")).unwrap();
            let out = Command::new("docker")
                .args(["build", "-q", "-t", &format!("{tag}:{name}")])
                .arg(&dir)
                .output()
                .expect("docker runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Images(tag)
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args([
                "rmi",
                "-f",
                &format!("{}:v1", self.0),
                &format!("{}:broken", self.0),
            ])
            .output();
    }
}

#[test]
#[cfg_attr(
    any(pym_no_engine, pym_no_kubectl),
    ignore = "needs a Docker engine and kubectl: run .ci/setup (CI runs it)"
)]
fn kubectl_reads_and_drives_the_local_apiserver() {
    need_engine();
    need_kubectl();
    let images = Images::build();
    let fake = FakeKube::start(Options::default()).expect("the local apiserver starts");
    let dir = temp_dir("kube");
    let kubeconfig = fake.kubeconfig(&dir, "pym-it");
    let kubectl = |args: &[&str], stdin: Option<&str>| -> Run {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &kubeconfig).args(args);
        if let Some(text) = stdin {
            let file = dir.join("stdin.yaml");
            std::fs::write(&file, text).unwrap();
            cmd.arg("-f").arg(&file);
        }
        let r = run(cmd);
        r.assert_hides(&[SECRET]);
        r
    };
    let ns = "pym-it-kube";
    let manifests = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: app-secret, namespace: {ns}}}
stringData: {{token: {SECRET}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  replicas: 2
  progressDeadlineSeconds: 60
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: {tag}:v1
        ports: [{{name: http, containerPort: 8080}}]
        env:
        - {{name: PORT, value: "8080"}}
        - name: SECRET
          valueFrom: {{secretKeyRef: {{name: app-secret, key: token}}}}
        readinessProbe: {{httpGet: {{path: /ping, port: http}}, periodSeconds: 1, failureThreshold: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hook, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: hook}}}}
  template:
    metadata: {{labels: {{app: hook}}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: app
        image: {tag}:v1
        ports: [{{containerPort: 8080}}]
        lifecycle: {{preStop: {{sleep: {{seconds: 3}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: hook, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: hook}}
  ports: [{{port: 80, targetPort: 8080}}]
"#,
        tag = images.0
    );
    kubectl(&["--validate=false", "create"], Some(&manifests)).assert_ok();
    kubectl(
        &[
            "-n",
            ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=60s",
        ],
        None,
    )
    .assert_ok()
    .assert_stdout_has("successfully rolled out");

    // What a user looks at.
    let got = kubectl(&["-n", ns, "get", "deploy,rs,pods,svc"], None);
    let table = &got.assert_ok().stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("deployment.apps/web ") && l.contains(" 2/2 ")),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("pod/web-") && l.contains(" 1/1 ") && l.contains("Running"))
            .count(),
        2,
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("service/web ") && l.contains("LoadBalancer")),
        "{table}"
    );
    let described = kubectl(&["-n", ns, "describe", "deployment", "web"], None);
    described
        .assert_ok()
        .assert_stdout_has("MinimumReplicasAvailable")
        .assert_stdout_has("NewReplicaSetAvailable")
        .assert_stdout_has("ScalingReplicaSet");
    kubectl(&["-n", ns, "logs", "deploy/web", "--tail=20"], None)
        .assert_ok()
        .assert_stdout_has("listening on 8080");

    // The Service reaches both ready pods, the secret set from the Secret.
    let port: u16 = kubectl(
        &[
            "-n",
            ns,
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
        None,
    )
    .assert_ok()
    .stdout
    .trim()
    .parse()
    .expect("a nodePort");
    let answers: Vec<String> = (0..4)
        .map(|_| http_get(port, "/ping").expect("the service answers").1)
        .collect();
    assert!(
        answers
            .iter()
            .all(|a| a.contains("version=v1 secret-set=True")),
        "{answers:?}"
    );
    assert_eq!(
        answers
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2,
        "not spread over both pods: {answers:?}"
    );
    // The Service's endpoints: both ready pods, each at its own address, on the named
    // target port resolved to the container's.
    let ips = kubectl(
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
        None,
    );
    let mut ips: Vec<String> = ips
        .assert_ok()
        .stdout
        .split_whitespace()
        .map(String::from)
        .collect();
    ips.sort();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert_ne!(ips[0], ips[1], "two pods share an address: {ips:?}");
    let endpoints = kubectl(
        &[
            "-n",
            ns,
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip} {.subsets[*].ports[*].port} {.subsets[*].ports[*].name}",
        ],
        None,
    );
    let want = format!("{} {} 8080 http", ips[0], ips[1]);
    let mut got: Vec<String> = endpoints
        .assert_ok()
        .stdout
        .split_whitespace()
        .map(String::from)
        .collect();
    got[..2].sort();
    assert_eq!(got.join(" "), want, "the Endpoints of web");
    kubectl(&["-n", ns, "describe", "service", "web"], None)
        .assert_ok()
        .assert_stdout_has(&format!("{}:8080", ips[0]))
        .assert_stdout_has(&format!("{}:8080", ips[1]));
    let slices = kubectl(
        &[
            "-n",
            ns,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
        None,
    );
    let slices = slices.assert_ok().stdout.clone();
    let rows: Vec<&str> = slices.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "one EndpointSlice for web:\n{slices}");
    let cols: Vec<&str> = rows[0].split_whitespace().collect();
    assert!(
        cols[0].starts_with("web-") && cols[1] == "IPv4" && cols[2] == "8080",
        "{slices}"
    );
    let mut listed: Vec<&str> = cols[3].split(',').collect();
    listed.sort();
    assert_eq!(listed, [ips[0].as_str(), ips[1].as_str()], "{slices}");
    // kubectl port-forward, to a pod and to a Service (its named target port), over the
    // SPDY tunnel kubectl asks for first and over plain SPDY, each carrying HTTP: small
    // answers, one of 200 kB (more than SPDY's initial window, which kubectl never
    // opens), two connections at once.
    // One of the Service's pods, by name.
    let pod = kubectl(
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    )
    .assert_ok()
    .stdout
    .trim()
    .to_string();
    for websockets in [true, false] {
        for (target, remote) in [
            (format!("pod/{pod}"), "8080"),
            ("svc/web".to_string(), "80"),
        ] {
            let pf = PortForward::start(&kubeconfig, ns, &target, remote, websockets);
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| http_get(pf.port, "/ping"));
                let b = s.spawn(|| http_get(pf.port, "/big"));
                (a.join().unwrap(), b.join().unwrap())
            });
            let what = format!("{target} (websockets {websockets})");
            let (status, body) =
                a.unwrap_or_else(|| panic!("no answer through {what}: {}", pf.stderr()));
            assert_eq!(status, 200, "{what}");
            assert!(body.contains("pong from web-"), "{what}: {body}");
            if target.starts_with("pod/") {
                assert!(body.contains(&format!("pong from {pod}")), "{what}: {body}");
            }
            let (status, big) =
                b.unwrap_or_else(|| panic!("no big answer through {what}: {}", pf.stderr()));
            assert_eq!((status, big.len()), (200, 200_000), "{what}");
            let (_, again) = http_get(pf.port, "/ping").expect("a third connection");
            assert!(again.contains("pong from web-"), "{what}: {again}");
        }
    }
    // A port nothing answers on: kubectl says the kubelet's error and gives up.
    let pf = PortForward::start(&kubeconfig, ns, &format!("pod/{pod}"), "9", true);
    let _ = http_get(pf.port, "/ping");
    let stderr = pf.wait_exit(Duration::from_secs(10));
    assert!(
        stderr.contains("error forwarding port 9 to pod")
            && stderr.contains("lost connection to pod"),
        "{stderr}"
    );

    let spec = kubectl(&["-n", ns, "get", "deployment", "web", "-o", "json"], None);
    assert!(
        spec.assert_ok().stdout.contains("secretKeyRef"),
        "{}",
        spec.stdout
    );

    // The proxy subresources: to a pod (its first declared port unless a number is given,
    // the query passed on), and to a ready pod of a Service by the Service port's name or
    // number; as in a real cluster, no port reaches only an unnamed Service port (an
    // endpoint port carries its Service port's name).
    let raw = |path: &str| {
        kubectl(
            &["get", "--raw", &format!("/api/v1/namespaces/{ns}/{path}")],
            None,
        )
    };
    raw(&format!("pods/{pod}/proxy/ping"))
        .assert_ok()
        .assert_stdout_has(&format!("pong from {pod} version=v1"));
    raw(&format!("pods/{pod}:8080/proxy/ping?x=1"))
        .assert_ok()
        .assert_stdout_has(&format!("pong from {pod} version=v1"));
    raw("services/web:http/proxy/ping")
        .assert_ok()
        .assert_stdout_has("pong from web-");
    raw("services/web:80/proxy/ping")
        .assert_ok()
        .assert_stdout_has("pong from web-");
    raw("services/web/proxy/ping")
        .assert_failed()
        .assert_stderr_has("no endpoints available for service \"web\"");
    let pod_ip = kubectl(
        &[
            "-n",
            ns,
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    )
    .assert_ok()
    .stdout
    .trim()
    .to_string();
    raw(&format!("pods/{pod}:9/proxy/ping"))
        .assert_failed()
        .assert_stderr_has(&format!(
            "error trying to reach service: dial tcp {pod_ip}:9: connect: connection refused"
        ));
    raw("pods/web-missing/proxy/ping")
        .assert_failed()
        .assert_stderr_has("pods \"web-missing\" not found");
    let calls = Command::new("curl")
        .args(["-fsS", &format!("{}/__fake/calls", fake.url)])
        .output()
        .unwrap();
    let calls = String::from_utf8_lossy(&calls.stdout);
    assert!(
        calls.contains("get pods/proxy") && calls.contains("get services/proxy"),
        "{calls}"
    );
    let fault = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "POST",
            &format!("{}/__fake/faults", fake.url),
            "-d",
            r#"{"verb":"get","resource":"services/proxy","code":403,"times":1}"#,
        ])
        .output()
        .unwrap();
    assert!(fault.status.success());
    raw("services/web:http/proxy/ping")
        .assert_failed()
        .assert_stderr_has("cannot get resource \"services/proxy\"");

    // preStop: a terminating pod keeps serving the connection it has during its 3 s hook,
    // gets no new one, and stops after the hook (not at once, not at the end of its 10 s
    // grace period).
    kubectl(
        &[
            "-n",
            ns,
            "rollout",
            "status",
            "deployment/hook",
            "--timeout=60s",
        ],
        None,
    )
    .assert_ok();
    let hook_port: u16 = kubectl(
        &[
            "-n",
            ns,
            "get",
            "svc",
            "hook",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
        None,
    )
    .assert_ok()
    .stdout
    .trim()
    .parse()
    .expect("a nodePort");
    let hook_pod = kubectl(
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            "app=hook",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    )
    .assert_ok()
    .stdout
    .trim()
    .to_string();
    raw("services/hook/proxy/ping")
        .assert_ok()
        .assert_stdout_has(&format!("pong from {hook_pod}"));
    let mut conn = TcpStream::connect(("127.0.0.1", hook_port)).expect("the hook service accepts");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(keep_alive_get(&mut conn).contains(&format!("pong from {hook_pod}")));
    let t0 = Instant::now();
    kubectl(
        &["-n", ns, "scale", "deployment/hook", "--replicas=0"],
        None,
    )
    .assert_ok();
    while kubectl(
        &[
            "-n",
            ns,
            "get",
            "pod",
            &hook_pod,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
        None,
    )
    .stdout
    .trim()
    .is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the pod is not terminating"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_get(hook_port, "/ping"),
        None,
        "a terminating pod got a new connection"
    );
    raw("services/hook/proxy/ping")
        .assert_failed()
        .assert_stderr_has("no endpoints available for service \"hook\"");
    // The terminating pod leaves the Endpoints and stays in the slice, terminating (the
    // controller writes within its next pass).
    let conditions = || {
        kubectl(
            &["-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name=hook", "-o", "jsonpath={.items[0].endpoints[0].conditions.ready} {.items[0].endpoints[0].conditions.terminating} {.items[0].endpoints[0].targetRef.name}"],
            None,
        )
        .assert_ok()
        .stdout
        .trim()
        .to_string()
    };
    let want = format!("false true {hook_pod}");
    let deadline = Instant::now() + Duration::from_secs(1);
    while conditions() != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(conditions(), want, "the terminating pod in its slice");
    let subsets = kubectl(
        &[
            "-n",
            ns,
            "get",
            "endpoints",
            "hook",
            "-o",
            "jsonpath={.subsets}",
        ],
        None,
    );
    assert_eq!(
        subsets.assert_ok().stdout.trim(),
        "",
        "the terminating pod in the Endpoints"
    );
    std::thread::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
    assert!(
        keep_alive_get(&mut conn).contains(&format!("pong from {hook_pod}")),
        "the open connection is not served during the hook"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "too slow to tell: {:?}",
        t0.elapsed()
    );
    let label = format!("label=org.pymacaron.fake-kube.pod={hook_pod}");
    while !docker(&["ps", "-q", "--filter", &label]).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(9),
            "the container still runs {:?} after the scale-down",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = t0.elapsed();
    assert!(
        stopped >= Duration::from_secs(3) && stopped < Duration::from_secs(7),
        "the container stopped {stopped:?} after the scale-down (hook: 3 s, grace: 10 s)"
    );

    // A rollout whose pods never become ready ends at the progress deadline, as kubectl
    // reports it; the old pods keep serving.
    kubectl(
        &[
            "-n",
            ns,
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"progressDeadlineSeconds":8}}"#,
        ],
        None,
    )
    .assert_ok();
    kubectl(
        &[
            "-n",
            ns,
            "set",
            "image",
            "deployment/web",
            &format!("app={}:broken", images.0),
        ],
        None,
    )
    .assert_ok();
    let r = kubectl(
        &[
            "-n",
            ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=60s",
        ],
        None,
    );
    r.assert_failed()
        .assert_stderr_has("error: deployment \"web\" exceeded its progress deadline");
    kubectl(&["-n", ns, "describe", "deployment", "web"], None)
        .assert_ok()
        .assert_stdout_has("ProgressDeadlineExceeded");
    let events = kubectl(&["-n", ns, "get", "events"], None);
    assert!(
        events.assert_ok().stdout.contains("Readiness probe failed"),
        "{}",
        events.stdout
    );
    for _ in 0..4 {
        assert!(
            http_get(port, "/ping")
                .expect("the old pods answer")
                .1
                .contains("version=v1")
        );
    }

    // Forbidden, as the apiserver says it.
    let fault = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "POST",
            &format!("{}/__fake/faults", fake.url),
            "-d",
            r#"{"verb":"patch","resource":"services","code":403,"times":1}"#,
        ])
        .output()
        .unwrap();
    assert!(fault.status.success());
    kubectl(
        &[
            "-n",
            ns,
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"selector":{"app":"other"}}}"#,
        ],
        None,
    )
    .assert_failed()
    .assert_stderr_has("cannot patch resource \"services\"");

    // A deleted namespace takes its pods' containers with it.
    kubectl(&["delete", "namespace", ns, "--timeout=90s"], None).assert_ok();
    let label = format!(
        "label=org.pymacaron.fake-kube={}-{}",
        std::process::id(),
        fake.port
    );
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &label]),
        "",
        "containers remain after the namespace was deleted"
    );
}

/// `kubectl port-forward TARGET :REMOTE` while it runs: the local port it listens on.
/// Stopped on drop.
struct PortForward {
    child: std::process::Child,
    port: u16,
    stderr: std::path::PathBuf,
}

impl PortForward {
    fn start(
        kubeconfig: &std::path::Path,
        ns: &str,
        target: &str,
        remote: &str,
        websockets: bool,
    ) -> PortForward {
        let stderr = kubeconfig.with_file_name(format!(
            "port-forward-{}-{remote}-{websockets}.log",
            target.replace('/', "-")
        ));
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
            .args([
                "-n",
                ns,
                "port-forward",
                "--address",
                "127.0.0.1",
                target,
                &format!(":{remote}"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("kubectl runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "kubectl port-forward {target} did not start: {line:?}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
        // Its stdout is drained so that its "Handling connection" lines never block it.
        std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
        PortForward {
            child,
            port,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for kubectl to exit on its own (failing the test if it does not, or exits 0):
    /// what it said.
    fn wait_exit(mut self, within: Duration) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    !status.success(),
                    "kubectl port-forward exited 0: {}",
                    self.stderr()
                );
                return self.stderr();
            }
            assert!(
                t0.elapsed() < within,
                "kubectl port-forward still runs: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET on an open HTTP/1.1 connection, which stays open: the answer's body.
fn keep_alive_get(conn: &mut TcpStream) -> String {
    write!(conn, "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("the connection takes a request");
    let mut reader = BufReader::new(conn);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("an answer on the open connection");
        assert!(!line.is_empty(), "the open connection was closed");
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&body).into_owned()
}
