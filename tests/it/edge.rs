//! The edge on the real engine: two services behind one edge, each answering only its own
//! host names; a promote of one under load (keep-alive and `Connection: close`) fails no
//! request of either; maintenance on live answers 503 without restarting the version and
//! leaves staging alone; the edge's access log and status; an edge killed outright while
//! its routes change comes back with the old routes or the new, never a mix.

use std::process::Command;
use std::time::Duration;

use crate::canary::{Load, WORK_OK, with_work};
use crate::support::*;

const DEPLOY: &[&str] = &["deploy", "--skip", "test", "--skip", "accept-local"];

/// An edge a test made (on ports of its own): its container, volume and network go on
/// drop, found by the name its ports give it.
pub(crate) struct EdgeGuard {
    pub http: u16,
    pub https: u16,
}

impl EdgeGuard {
    pub(crate) fn new() -> EdgeGuard {
        EdgeGuard {
            http: free_port(),
            https: free_port(),
        }
    }

    pub(crate) fn name(&self) -> String {
        format!("pym-edge-{}", self.http)
    }

    /// The lines of pym-config.yaml that put a service behind this edge.
    pub(crate) fn config(&self, hosts: &str) -> String {
        format!(
            "hosts: [{hosts}]\nedge_http_port: {}\nedge_https_port: {}\n",
            self.http, self.https
        )
    }
}

impl Drop for EdgeGuard {
    fn drop(&mut self) {
        let name = self.name();
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let _ = Command::new("docker")
            .args(["volume", "rm", &name])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &name])
            .output();
    }
}

/// A service on the test registry behind `edge` as `host`; its live acceptance is the
/// contract check alone (the host name resolves nowhere but in the edge).
fn behind_edge(tag: &str, reg: &Registry, edge: &EdgeGuard, host: &str) -> TestService {
    let svc = TestService::new(tag);
    svc.for_docker_target(reg);
    with_work(&svc, WORK_OK);
    let config = svc.read("pym-config.yaml") + &edge.config(host);
    svc.write("pym-config.yaml", &config)
        .write("pym-config.live.yaml", "accept_command: \"\"\n")
        .commit("behind the edge");
    svc
}

fn version_at(port: u16, host: &str) -> Option<(u16, String)> {
    http_get_at_host("127.0.0.1", port, host, "/work").map(|(status, body)| {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (
            status,
            v["version"].as_str().map_or(body.clone(), str::to_string),
        )
    })
}

/// The StartedAt of a container, by name.
fn started_at(name: &str) -> String {
    docker(&["inspect", "-f", "{{.State.StartedAt}}", name])
        .trim()
        .to_string()
}

#[test]
#[cfg_attr(pym_no_engine, ignore = "needs a Docker engine: see build.rs")]
fn two_services_share_one_edge_by_host_and_a_promote_under_load_fails_no_request() {
    need_engine();
    let reg = Registry::start();
    let edge = EdgeGuard::new();
    let a = behind_edge("edge-a", &reg, &edge, "a.test");
    let b = behind_edge("edge-b", &reg, &edge, "b.test, www.b.test");
    // B's staging gets names of its own on the same edge.
    b.write("pym-config.staging.yaml", "hosts: [staging.b.test]\n")
        .commit("b's staging hosts");
    a.pym_env(DEPLOY, &reg.env()).assert_ok();
    let r = b.pym_env(DEPLOY, &reg.env());
    r.assert_ok();
    let (va1, vb) = (a.xtask_version(), b.xtask_version());

    // Each answers its own host names only.
    assert_eq!(version_at(edge.http, "a.test"), Some((200, va1.clone())));
    assert_eq!(version_at(edge.http, "b.test"), Some((200, vb.clone())));
    assert_eq!(version_at(edge.http, "www.b.test"), Some((200, vb.clone())));
    let staged = http_get_at_host("127.0.0.1", edge.http, "staging.b.test", "/version")
        .expect("the edge answers for B's staging");
    assert!(
        staged.0 == 200 && staged.1.contains(&vb) && staged.1.contains("staging"),
        "{staged:?}"
    );
    let other = version_at(edge.http, "c.test").expect("the edge answers");
    assert_eq!(other.0, 404, "{other:?}");
    assert_eq!(version_at(edge.http, "a.test:443").map(|x| x.0), Some(200));

    // A host of A's is refused to another service before its first step.
    let c = behind_edge("edge-c", &reg, &edge, "a.test");
    let refused = c.pym_env(DEPLOY, &reg.env());
    refused
        .assert_failed()
        .assert_stderr_has("`a.test` is served on the edge");
    assert!(!refused.stderr.contains("build "), "{}", refused.stderr);
    // So is B's staging host to C's staging, and a staging host that C's own live names.
    c.write(
        "pym-config.yaml",
        &c.read("pym-config.yaml").replace("[a.test]", "[c.test]"),
    )
    .write("pym-config.staging.yaml", "hosts: [staging.b.test]\n")
    .commit("c's staging asks for b's staging host");
    c.pym_env(DEPLOY, &reg.env())
        .assert_failed()
        .assert_stderr_has("`staging.b.test` is served on the edge");
    c.write(
        "pym-config.staging.yaml",
        "hosts: [staging.c.test, c.test]\n",
    )
    .commit("c's staging shares a host with its live");
    c.pym_env(DEPLOY, &reg.env())
        .assert_failed()
        .assert_stderr_has("staging names `c.test`, which live names too");
    drop(c);

    // A promote of A under load on both: no failed request on either.
    with_work(
        &a,
        r#"("GET", "/work") => (200, serde_json::json!({ "version": info.version, "v": 2 })),"#,
    );
    a.commit("a v2");
    let va2 = a.xtask_version();
    let load_a = Load::start_at("a.test", edge.http, 6);
    let load_b = Load::start_at("b.test", edge.http, 4);
    std::thread::sleep(Duration::from_secs(1));
    a.pym_env(DEPLOY, &reg.env()).assert_ok();
    std::thread::sleep(Duration::from_secs(1));
    let (seen_a, seen_b) = (load_a.finish(), load_b.finish());
    assert!(seen_a.failures.is_empty(), "A: {:?}", seen_a.failures);
    assert!(seen_b.failures.is_empty(), "B: {:?}", seen_b.failures);
    assert!(
        seen_a.by_version.get(&va2).copied().unwrap_or(0) > 0,
        "{seen_a:?}"
    );
    assert_eq!(
        seen_b.by_version.keys().collect::<Vec<_>>(),
        vec![&vb],
        "B served only its own version"
    );
    assert!(
        seen_a.ok > 50 && seen_b.ok > 50,
        "{} {}",
        seen_a.ok,
        seen_b.ok
    );

    // Maintenance on A's live: 503 with Retry-After and the page, the version not
    // restarted; B and A's staging untouched.
    a.write("maintenance.html", "<h1>back soon</h1>\n");
    a.write(
        "pym-config.live.yaml",
        "accept_command: \"\"\nmaintenance_page: maintenance.html\n",
    )
    .commit("a maintenance page");
    let live_a = format!("pym-{}-live-{va2}", a.name);
    let since = started_at(&live_a);
    a.xtask(&["maintenance", "on"]).assert_ok();
    let raw = raw_get(edge.http, "a.test", "/work");
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: "), "{raw}");
    assert!(raw.contains("<h1>back soon</h1>"), "{raw}");
    assert_eq!(version_at(edge.http, "b.test"), Some((200, vb.clone())));
    let staging_port: u16 = a
        .read("pym-config.yaml")
        .lines()
        .find_map(|l| l.strip_prefix("staging_port: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(http_get(staging_port, "/ping").map(|x| x.0), Some(200));
    let status = a.xtask(&["status"]);
    status.assert_ok();
    assert!(
        status.stdout.lines().any(|l| l.starts_with("edge-live")
            && l.contains("a.test")
            && l.contains("maintenance")),
        "{}",
        status.stdout
    );
    a.xtask(&["maintenance", "off"]).assert_ok();
    assert_eq!(version_at(edge.http, "a.test"), Some((200, va2.clone())));
    assert_eq!(
        started_at(&live_a),
        since,
        "maintenance restarted the version"
    );

    // One JSON access-log line per request.
    let logs = Command::new("docker")
        .args(["logs", &edge.name()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&logs.stdout);
    let line = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| j["host"] == "b.test" && j["path"] == "/work")
        .unwrap_or_else(|| panic!("no access-log line for b.test:\n{stdout}"));
    assert_eq!(line["status"], 200, "{line}");
    assert!(
        line["upstream"].as_str().unwrap().contains(&b.name),
        "{line}"
    );

    // Destroying B's live takes its site off the edge, which keeps serving A.
    b.pym(&["destroy", "--env", "live", "--yes"]).assert_ok();
    assert_eq!(version_at(edge.http, "b.test").map(|x| x.0), Some(404));
    assert_eq!(version_at(edge.http, "a.test"), Some((200, va2)));
}

/// The whole answer of one GET with `Host: host`, headers and body.
fn raw_get(port: u16, host: &str, path: &str) -> String {
    raw_get_at("127.0.0.1", port, host, path)
}

fn raw_get_at(ip: &str, port: u16, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).to_string()
}

#[test]
#[cfg_attr(pym_no_engine, ignore = "needs a Docker engine: see build.rs")]
fn tls_from_files_and_an_edge_killed_while_its_routes_change_keeps_old_routes_or_new() {
    need_engine();
    let reg = Registry::start();
    let edge = EdgeGuard::new();
    let a = behind_edge("edge-kill", &reg, &edge, "k.test");
    // TLS from files the team gives: a certificate for k.test from a CA of the test's.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "pym-it edge CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["k.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = a.read("pym-config.yaml") + "tls: {cert: tls/k.pem, key: tls/k.key}\n";
    a.write("tls/k.pem", &cert.pem())
        .write("tls/k.key", &key.serialize_pem())
        .write("pym-config.yaml", &config)
        .commit("tls from files");
    let root = temp_dir("edge-ca").join("ca.pem");
    std::fs::write(&root, ca.pem()).unwrap();
    // The engine's events as they happen (its replay of past ones is a bounded buffer).
    let mut events = Command::new("docker")
        .args([
            "events",
            "--filter",
            "type=container",
            "--format",
            "{{json .}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = events.stdout.take().unwrap();
    // Read as they come, so that other tests' events never fill the pipe.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut all);
        String::from_utf8_lossy(&all).to_string()
    });
    let deployed = a.pym_env(DEPLOY, &reg.env());
    deployed.assert_ok();
    assert!(
        !deployed.stdout.contains("PRIVATE KEY") && !deployed.stderr.contains("PRIVATE KEY"),
        "the key was shown"
    );
    let (http, status, body, _) = curl_tls("127.0.0.1", &edge, "k.test", &root, "/work")
        .unwrap_or_else(|e| panic!("k.test over TLS: {e}"));
    assert_eq!((http.as_str(), status), ("2", 200), "{body}");
    // The key went through the edge's stdin: no engine event carries it, though the
    // execs that wrote the site are there.
    let _ = events.kill();
    let _ = events.wait();
    let events = reader.join().unwrap();
    assert!(
        events.contains("__edge-site") && events.contains(&edge.name()),
        "no exec of __edge-site on the edge in the events:\n{events}"
    );
    assert!(
        !events.contains("PRIVATE KEY"),
        "the key is in the engine's events"
    );
    let name = edge.name();
    let state = format!("/state/sites/{}-live.upstream", a.name);
    let (one, two) = (
        "pym-x-live-1:8080 10.9.9.1:8080",
        "pym-x-live-2:8080 10.9.9.2:8080",
    );
    // The route file as the restarted edge reads it (asked until the edge takes an exec).
    let routes = |n: &str| {
        let mut text = None;
        wait_until(
            "the edge to read its routes",
            Duration::from_secs(20),
            || {
                text = Command::new("docker")
                    .args([
                        "exec",
                        n,
                        "/usr/local/bin/pym-proxy",
                        "__proxy-routes",
                        "--state",
                        &state,
                    ])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string());
                text.is_some()
            },
        );
        text.unwrap_or_default()
    };
    for round in 0..6 {
        // Route changes back and forth, and the edge killed among them.
        let writer = {
            let (name, state) = (name.clone(), state.clone());
            std::thread::spawn(move || {
                for i in 0..40 {
                    let (up, addr) = [one, two][i % 2].split_once(' ').unwrap();
                    let _ = Command::new("docker")
                        .args([
                            "exec",
                            &name,
                            "/usr/local/bin/pym-proxy",
                            "__proxy-route",
                            up,
                            "--addr",
                            addr,
                            "--state",
                            &state,
                        ])
                        .output();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &name]);
        let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        writer.join().unwrap();
        let _ = Command::new("docker").args(["start", &name]).output();
        wait_until("the edge back", Duration::from_secs(20), || {
            docker(&["inspect", "-f", "{{.State.Running}}", &name]).trim() == "true"
        });
        let text = routes(&name);
        let first = text.lines().next().unwrap_or("").trim().to_string();
        assert!(
            first == one || first == two || first.starts_with(&format!("pym-{}-live-", a.name)),
            "round {round}: the route file reads {text:?}"
        );
        for l in text.lines() {
            assert!(
                l.split_whitespace().count() <= 2 && l.contains(':'),
                "round {round}: a torn line {l:?} in {text:?}"
            );
        }
    }
    // Its sites survive a restart of the edge: A's site is there (routed to the last
    // route written).
    let status = docker(&["exec", &name, "/usr/local/bin/pym-proxy", "__edge-status"]);
    assert!(status.contains("k.test"), "{status}");
}

/// `curl` to the edge's HTTPS port for `host`, trusting `root`: (HTTP version, status,
/// body, the served certificate's start date), or what curl said.
fn curl_tls(
    at: &str,
    edge: &EdgeGuard,
    host: &str,
    root: &std::path::Path,
    path: &str,
) -> Result<(String, u16, String, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "5", "--cacert"])
        .arg(root)
        .args([
            "--resolve",
            &format!("{host}:{}:{at}", edge.https),
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("https://{host}:{}{path}", edge.https),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    if !out.status.success() {
        return Err(stderr);
    }
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (version, status) = tail.split_once(' ').unwrap_or(("", "0"));
    let start = stderr
        .lines()
        .find_map(|l| {
            l.trim_start_matches(['*', ' '])
                .strip_prefix("start date: ")
        })
        .unwrap_or("")
        .to_string();
    Ok((
        version.to_string(),
        status.parse().unwrap_or(0),
        body.to_string(),
        start,
    ))
}

#[test]
#[cfg_attr(pym_no_engine, ignore = "needs a Docker engine: see build.rs")]
fn an_acme_certificate_comes_with_the_first_deploy_is_served_over_http2_renewed_and_kept() {
    need_engine();
    // An engine of the test's own, restarted at the end as a server's would be.
    let mut engine = OwnEngine::start();
    let edge = EdgeGuard::new();
    // Pebble here validates at the engine's address; the edge reaches it at this machine's.
    let pebble =
        crate::pebble::Pebble::start(edge.http, edge.https, 60, &engine.gateway, &engine.addr);
    let svc = TestService::new("edge-tls");
    with_work(&svc, WORK_OK);
    let config = svc.read("pym-config.yaml")
        + &edge.config("t.test")
        + &format!(
            "publish_ip: {}\nlive_port: {}\nstaging_port: {}\ntls: acme\nacme_directory: {}\nacme_ca: pebble-ca.pem\nacme_email: ops@t.test\n",
            engine.addr,
            free_port(),
            free_port(),
            pebble.directory
        );
    svc.write("pym-config.yaml", &config)
        .write("pym-config.live.yaml", "accept_command: \"\"\n")
        .write("pebble-ca.pem", &pebble.listener_ca)
        .commit("behind the edge of its own engine, tls: acme from pebble");
    svc.pym_env(DEPLOY, &[engine.env()]).assert_ok();
    let version = svc.xtask_version();
    let root = pebble.issuing_root();
    let logs = |engine: &OwnEngine| {
        engine
            .try_docker(&["logs", &edge.name()])
            .unwrap_or_default()
    };

    // Issued on the first deploy, validated by curl with Pebble's root, over HTTP/2.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (http, status, body, first_start) = loop {
        match curl_tls(&engine.addr, &edge, "t.test", &root, "/work") {
            Ok(x) => break x,
            Err(e) if std::time::Instant::now() > deadline => panic!(
                "no certificate for t.test: {e}\n--- the edge\n{}\n--- pebble\n{}",
                logs(&engine),
                pebble.log()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!((http.as_str(), status), ("2", 200), "{body}");
    assert!(body.contains(&version), "{body}");
    assert!(!first_start.is_empty());
    // Plain HTTP is sent to HTTPS.
    let raw = raw_get_at(&engine.addr, edge.http, "t.test", "/work?x=1");
    assert!(raw.starts_with("HTTP/1.1 308"), "{raw}");
    assert!(
        raw.contains(&format!("location: https://t.test:{}/work?x=1", edge.https)),
        "{raw}"
    );
    let status = svc.xtask_env(&["status"], &[engine.env()]);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("edge-live") && l.contains("t.test until")),
        "{}",
        status.stdout
    );

    // Renewed before it expires (a third of its 60 s left), without a deploy.
    let mut renewed = String::new();
    wait_until("a renewed certificate", Duration::from_secs(75), || {
        renewed = curl_tls(&engine.addr, &edge, "t.test", &root, "/ping")
            .map(|x| x.3)
            .unwrap_or_default();
        !renewed.is_empty() && renewed != first_start
    });

    // Kept across a restart of the edge, then of the engine: served from the edge's
    // volume, with the route to the live version.
    engine.docker(&["restart", "-t", "1", &edge.name()]);
    let served = |engine: &OwnEngine, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match curl_tls(&engine.addr, &edge, "t.test", &root, "/work") {
                Ok((_, 200, body, _)) if body.contains(&version) => break,
                r if std::time::Instant::now() > deadline => {
                    panic!("{what}: {r:?}\n--- the edge\n{}", logs(engine))
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    };
    served(&engine, "after a restart of the edge");
    engine.restart();
    served(&engine, "after a restart of the engine");
}

/// A Docker engine of this test's own, in a network namespace of its own, so that it can
/// be restarted (and make and delete its bridges) without touching the engine every
/// other test uses. This machine reaches it at `addr` (a veth pair; the engine publishes
/// there) and it reaches this machine at `gateway`. Stopped, its namespace, routes and
/// directory removed on drop.
pub(crate) struct OwnEngine {
    dir: std::path::PathBuf,
    ns: String,
    args: Vec<String>,
    child: Option<std::process::Child>,
    routes: Vec<String>,
    pub host: String,
    /// Its side of the veth pair: where it publishes ports.
    pub addr: String,
    /// This machine's side: where its containers reach this machine.
    pub gateway: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OwnEngine {
    pub(crate) fn start() -> OwnEngine {
        let pid = std::process::id();
        let k = pid % 200 + 20;
        // Short paths: the engine's sockets live under them.
        let dir = std::path::PathBuf::from(format!("/tmp/pym-e{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ns, host_if, ns_if) = (
            format!("pymns{pid}"),
            format!("pymh{pid}"),
            format!("pymn{pid}"),
        );
        let (gateway, addr) = (format!("10.251.{k}.1"), format!("10.251.{k}.2"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &ns]);
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for args in [
            vec!["addr", "add", &format!("{addr}/24"), "dev", &ns_if],
            vec!["link", "set", &ns_if, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &gateway],
        ] {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend(args);
            ip(&all);
        }
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .unwrap();
        assert!(st.success());
        // Its containers' networks, routed back to them through the namespace.
        let (pool, bridge) = (
            format!("10.{}.0.0/16", 100 + k % 100),
            format!("10.250.{k}.1/24"),
        );
        let routes = vec![pool.clone(), format!("10.250.{k}.0/24")];
        for r in &routes {
            let _ = Command::new("ip").args(["route", "del", r]).output();
            ip(&["route", "add", r, "via", &addr]);
        }
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let d = dir.display();
        let args: Vec<String> = [
            format!("--config-file={d}/daemon.json"),
            format!("--data-root={d}/data"),
            format!("--exec-root={d}/x"),
            format!("--pidfile={d}/docker.pid"),
            format!("--host=unix://{d}/docker.sock"),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            format!("--bip={bridge}"),
            "--storage-driver=overlay2".into(),
            format!("--default-address-pool=base={pool},size=24"),
            format!("--containerd-namespace={ns}"),
            format!("--containerd-plugins-namespace={ns}-plugins"),
        ]
        .into();
        let mut engine = OwnEngine {
            host: format!("unix://{d}/docker.sock"),
            dir,
            ns,
            args,
            child: None,
            routes,
            addr,
            gateway,
        };
        engine.run();
        // The base image the services build on, from the main engine.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save debian:bookworm-slim | DOCKER_HOST={} docker load",
                engine.host
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        engine
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        self.child = Some(
            // nsenter enters the network namespace alone (`ip netns exec` would remount
            // /sys, and dockerd needs the cgroups mounted there).
            Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{}", self.ns))
                .arg("dockerd")
                .args(&self.args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("dockerd starts"),
        );
        wait_until("the test's own engine", Duration::from_secs(60), || {
            self.try_docker(&["info"]).is_some()
        });
    }

    /// Stops the engine as a host's shutdown does (SIGTERM, its containers stopped with
    /// it) and starts it again; containers with a restart policy come back.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // nsenter execs dockerd: the child is dockerd itself.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub(crate) fn env(&self) -> (&str, &str) {
        ("DOCKER_HOST", self.host.as_str())
    }

    pub(crate) fn try_docker(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub(crate) fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args)
            .unwrap_or_else(|| panic!("docker {args:?} failed on the test's own engine"))
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Some(ids) = self.try_docker(&["ps", "-aq"])
        {
            for id in ids.split_whitespace() {
                let _ = self.try_docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        for r in &self.routes {
            let _ = Command::new("ip").args(["route", "del", r]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("x"))
            .output();
        let _ = Command::new("rm").arg("-rf").arg(&self.dir).status();
    }
}
