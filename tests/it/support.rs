//! Test support: a generated service on disk, the pymdeploy binary, the docker CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn pymdeploy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pymdeploy")
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One cargo target directory for every service the tests generate, so their shared
/// dependencies (pymdeploy's own, for the xtask) compile once per run.
pub fn services_target_dir() -> PathBuf {
    repo_root().join("target").join("it-services")
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pym-it-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether the Docker engine answers now.
pub fn engine_here() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Fails the test unless the Docker engine answers. A test that calls it says
/// `#[cfg_attr(pym_no_engine, ignore = ...)]`: where build.rs found no engine it is
/// reported as ignored, with the reason; with `CI` set, or when the engine went away
/// after the tests were built, it fails here, never passes unrun.
pub fn need_engine() {
    TIMED.with(|_| ());
    assert!(
        engine_here(),
        "no Docker engine answers `docker info`: start one with .ci/setup (CI runs every engine test; outside CI, a test binary built without an engine reports these tests as ignored)"
    );
}

thread_local! {
    /// Started by an engine test's first `need_engine`, written when its thread ends.
    static TIMED: TestTime = TestTime {
        name: std::thread::current().name().unwrap_or("?").to_string(),
        started: std::time::Instant::now(),
    };
}

/// How long an engine test took, appended to the file `PYM_TEST_TIMES` names (`cargo
/// xtask ci` lists the slowest): libtest runs each test on a thread named after it.
struct TestTime {
    name: String,
    started: std::time::Instant,
}

impl Drop for TestTime {
    fn drop(&mut self) {
        use std::io::Write;
        let Some(path) = std::env::var_os("PYM_TEST_TIMES") else {
            return;
        };
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let secs = self.started.elapsed().as_secs_f64();
            let _ = writeln!(file, "{secs:.1}\t{}", self.name);
        }
    }
}

/// Polls `ready` every 50 ms until it holds; panics naming `what` after `limit`.
#[track_caller]
pub fn wait_until(what: &str, limit: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not so after {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `docker ARGS`, stdout trimmed; panics on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a run printed and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Run {
        // The reason is near stderr's end; a log cut in the middle keeps a test's last
        // lines, so they are said again there.
        let tail: Vec<&str> = self.stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        assert_eq!(
            self.code,
            Some(0),
            "expected success\n--- stdout\n{}\n--- stderr\n{}\n--- stderr's last lines, again\n{}",
            self.stdout,
            self.stderr,
            tail.join("\n")
        );
        self
    }

    #[track_caller]
    pub fn assert_failed(&self) -> &Run {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a failure, got {:?}\n--- stderr\n{}",
            self.code,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that none of `secrets` is in the output, stdout or stderr.
    #[track_caller]
    pub fn assert_hides(&self, secrets: &[&str]) -> &Run {
        for secret in secrets {
            assert!(
                !self.stderr.contains(secret) && !self.stdout.contains(secret),
                "a secret was printed\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout,
                self.stderr
            );
        }
        self
    }

    #[track_caller]
    pub fn assert_stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}",
            self.stdout
        );
        self
    }
}

/// Runs a command with the environment the tests want: plain output, no colour, the
/// shared target directory.
pub fn run(mut cmd: Command) -> Run {
    cmd.env("NO_COLOR", "1")
        .env("PYM_STATE_DIR", repo_root().join("target/it-state"))
        .env_remove("PYMDEPLOY_PATH");
    // A service's xtask runs the binary under test, in the shared target directory,
    // unless the test set (or removed) either.
    let set = |cmd: &Command, var: &str| cmd.get_envs().any(|(k, _)| k == var);
    if !set(&cmd, "PYMDEPLOY_BIN") {
        cmd.env("PYMDEPLOY_BIN", pymdeploy_bin());
    }
    if !set(&cmd, "CARGO_TARGET_DIR") {
        cmd.env("CARGO_TARGET_DIR", services_target_dir());
    }
    Run::from(cmd.output().expect("the command starts"))
}

/// A service made by `pymdeploy new`, removed with its images and containers on drop.
pub struct TestService {
    pub name: String,
    pub root: PathBuf,
}

impl TestService {
    /// `pymdeploy new` with a name unique to this test run.
    pub fn new(tag: &str) -> TestService {
        TestService::new_for(tag, "docker")
    }

    /// `pymdeploy new --target TARGET` with a name unique to this test run.
    pub fn new_for(tag: &str, target: &str) -> TestService {
        let name = format!("it-{tag}-{}", std::process::id());
        let parent = temp_dir(tag);
        let root = parent.join(&name);
        let mut cmd = Command::new(pymdeploy_bin());
        cmd.arg("new")
            .arg(&name)
            .arg("--path")
            .arg(&root)
            .arg("--pymdeploy-path")
            .arg(repo_root())
            .arg("--target")
            .arg(target);
        run(cmd).assert_ok();
        TestService { name, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    pub fn write(&self, rel: &str, text: &str) -> &TestService {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Replaces `from` with `to` in a file; panics if `from` is not there.
    pub fn edit(&self, rel: &str, from: &str, to: &str) -> &TestService {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} has no {from:?}");
        self.write(rel, &text.replacen(from, to, 1))
    }

    pub fn commit(&self, message: &str) -> &TestService {
        for args in [
            vec!["add", "-A"],
            vec![
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                message,
            ],
        ] {
            let st = Command::new("git")
                .args(&args)
                .current_dir(&self.root)
                .status()
                .unwrap();
            assert!(st.success(), "git {args:?}");
        }
        self
    }

    /// `pymdeploy ARGS` in the service root.
    pub fn pym(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(pymdeploy_bin());
        cmd.args(args).current_dir(&self.root);
        run(cmd)
    }

    /// `pymdeploy ARGS` with extra environment variables.
    pub fn pym_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(pymdeploy_bin());
        cmd.args(args).current_dir(&self.root);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd)
    }

    /// `pymdeploy ARGS` on a terminal (the pseudo-terminal util-linux's `script` makes),
    /// with `typed` and Enter typed on it: what the user sees there, stdout and stderr
    /// as one, is the run's `stdout`.
    pub fn pym_on_terminal(&self, args: &[&str], typed: &str, env: &[(&str, &str)]) -> Run {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let line: Vec<String> = std::iter::once(pymdeploy_bin())
            .chain(args.iter().copied())
            .map(quote)
            .collect();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "printf '%s\\n' {} | script -qec {} /dev/null",
                quote(typed),
                quote(&line.join(" "))
            ))
            .current_dir(&self.root);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd)
    }

    /// `pymdeploy ARGS` started in the background, stderr piped, for tests that act on
    /// a run while it goes on.
    pub fn spawn_pym_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = Command::new(pymdeploy_bin());
        cmd.args(args)
            .current_dir(&self.root)
            .env("NO_COLOR", "1")
            .env("CARGO_TARGET_DIR", services_target_dir())
            .env("PYM_STATE_DIR", repo_root().join("target/it-state"))
            .env("PYMDEPLOY_BIN", pymdeploy_bin())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Its own process group, as a terminal's foreground job: `Spawned::interrupt`
        // sends SIGINT to the whole group, as Ctrl-C does.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().expect("pymdeploy starts")
    }

    /// The version HEAD builds as, asked of the service's own xtask.
    pub fn xtask_version(&self) -> String {
        self.xtask(&["version"])
            .assert_ok()
            .stdout
            .trim()
            .to_string()
    }

    /// `cargo xtask ARGS` in the service root: the generated pipeline itself.
    pub fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_env(args, &[])
    }

    pub fn xtask_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("xtask").args(args).current_dir(&self.root);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd)
    }

    /// The identity `new` or `init` wrote in pym-config.yaml: what the docker target
    /// labels everything it makes with, and the only thing cleanup goes by, so a
    /// same-named service of another repository (a demo, a user's own) is never touched.
    pub fn service_id(&self) -> String {
        self.config_value("service_id")
            .expect("pym-config.yaml has a service_id (new and init write one)")
    }

    /// A top-level key's value in pym-config.yaml, as written.
    fn config_value(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.path("pym-config.yaml")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().trim_matches('"').to_string())
    }

    /// Containers of this service still on the engine, running or not.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=org.pymacaron.service-id={}", self.service_id());
        docker(&["ps", "-a", "-q", "--filter", &filter])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Images built from this repository's commits (each build labels its image
    /// `<name>/<commit>`), as `id repository:tag` lines, untagged ones included.
    fn built_images(&self) -> Vec<(String, String)> {
        let out = Command::new("git")
            .args(["rev-list", "--all"])
            .current_dir(&self.root)
            .output()
            .expect("git runs");
        let shas = String::from_utf8_lossy(&out.stdout).to_string();
        // The name it builds under, which a test may have changed from the directory's.
        let name = self
            .config_value("name")
            .unwrap_or_else(|| self.name.clone());
        shas.lines()
            .flat_map(|sha| {
                let filter = format!("label=org.pymacaron.commit={name}/{sha}");
                docker(&[
                    "images",
                    "--filter",
                    &filter,
                    "--format",
                    "{{.ID}} {{.Repository}}:{{.Tag}}",
                ])
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(id, tag)| (id.to_string(), tag.to_string()))
                .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Image tags built from this repository, under any registry and namespace.
    pub fn images(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .built_images()
            .into_iter()
            .map(|(_, tag)| tag)
            .filter(|t| !t.ends_with(":<none>"))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

impl Drop for TestService {
    /// Removes what this service made, found by its identity and its commits: its
    /// containers, images and network. Nothing is found by name alone.
    fn drop(&mut self) {
        if self.config_value("service_id").is_some() && engine_here() {
            for c in self.containers() {
                let _ = Command::new("docker").args(["rm", "-f", &c]).output();
            }
            for (id, _) in self.built_images() {
                let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
            }
            let filter = format!("label=org.pymacaron.service-id={}", self.service_id());
            for n in docker(&["network", "ls", "-q", "--filter", &filter]).lines() {
                // What the test joined to it (an edge it made) leaves it first.
                let joined = Command::new("docker")
                    .args([
                        "network",
                        "inspect",
                        "-f",
                        "{{range .Containers}}{{.Name}} {{end}}",
                        n,
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                for c in joined.split_whitespace() {
                    let _ = Command::new("docker")
                        .args(["network", "disconnect", "-f", n, c])
                        .output();
                }
                let _ = Command::new("docker").args(["network", "rm", n]).output();
            }
        }
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// A real registry (Debian's docker-registry) on a free loopback port, with htpasswd
/// auth, stopped and deleted on drop.
pub struct Registry {
    pub host: String,
    pub user: String,
    pub password: String,
    dir: PathBuf,
    child: std::process::Child,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = temp_dir("registry");
        let (user, password) = (
            "pym-it".to_string(),
            format!("pw-{}-registry", std::process::id()),
        );
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", &user, &password])
            .output()
            .expect("htpasswd runs (run .ci/setup)");
        assert!(htpasswd.status.success());
        std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: pym-it\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve"])
            .arg(dir.join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry runs (run .ci/setup)");
        let host = format!("127.0.0.1:{port}");
        wait_listening(port, "the registry", &dir.join("registry.log"));
        Registry {
            host,
            user,
            password,
            dir,
            child,
        }
    }

    /// The HTTP status of a manifest in the registry, asked with curl and the right
    /// credentials.
    pub fn manifest_status(&self, repo: &str, reference: &str) -> String {
        let url = format!("http://{}/v2/{repo}/manifests/{reference}", self.host);
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-u",
                &format!("{}:{}", self.user, self.password),
            ])
            .args([
                "-H",
                "Accept: application/vnd.docker.distribution.manifest.v2+json",
                &url,
            ])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (10 s at most) until a server the test started listens on loopback `port`;
/// panics with its log otherwise.
pub fn wait_listening(port: u16, what: &str, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A free loopback port (free when asked; tests use it at once).
/// A port nothing listens on now, below the kernel's ephemeral range (32768 and up),
/// where the engine's random host ports, the local clouds' service ports and every
/// outgoing connection take theirs: a port one test chose is not handed to another
/// program between the choice and its use. Each call (of every test binary running)
/// starts from its own place in 20000-32000.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    loop {
        let n = NEXT.fetch_add(7919, Ordering::Relaxed).wrapping_add(seed);
        let port = 20000 + (n % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
}

/// One GET on a fresh connection: status and body, or `None` if it failed in any way.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at("127.0.0.1", port, path)
}

/// One GET to `host:port` with `Host: host`, on a fresh connection.
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at_host(host, port, host, path)
}

/// One GET to `ip:port` with `Host: host` (a proxy that routes by host name), on a
/// fresh connection.
pub fn http_get_at_host(ip: &str, port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((ip, port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

/// `/version` of whatever answers on `port`, as JSON.
pub fn version_on(port: u16) -> Option<serde_json::Value> {
    let (status, body) = http_get(port, "/version")?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Requests `/version` on `port` in a loop on a thread, each on a new connection, until
/// stopped; counts answers and failures, and the versions seen.
pub struct RequestLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>, std::collections::BTreeSet<String>)>,
}

impl RequestLoop {
    pub fn start(port: u16) -> RequestLoop {
        RequestLoop::start_at("127.0.0.1", port)
    }

    /// `start` against `host:port`.
    pub fn start_at(host: &str, port: u16) -> RequestLoop {
        let host = host.to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failures, mut versions) =
                (0, Vec::new(), std::collections::BTreeSet::new());
            let started = std::time::Instant::now();
            // Bounded: at most ten minutes, at most 200 000 requests.
            while !flag.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() < std::time::Duration::from_secs(600)
                && ok + failures.len() < 200_000
            {
                match http_get_at(&host, port, "/version") {
                    Some((200, body)) => {
                        ok += 1;
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        versions.insert(v["version"].as_str().unwrap_or("?").to_string());
                    }
                    other => failures.push(format!(
                        "{:?} after {:?}",
                        other.map(|(s, _)| s),
                        started.elapsed()
                    )),
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (ok, failures, versions)
        });
        RequestLoop { stop, handle }
    }

    /// Stops the loop: (answers, failures, versions seen).
    pub fn finish(self) -> (usize, Vec<String>, std::collections::BTreeSet<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

impl TestService {
    /// Points the service at `registry` and gives it its own live and staging ports.
    /// Returns (live port, staging port).
    pub fn for_docker_target(&self, registry: &Registry) -> (u16, u16) {
        let (live, staging) = (free_port(), free_port());
        self.edit("pym-config.yaml", "# docker_repo: registry.example.com/team", &format!("docker_repo: {}/team\nlive_port: {live}\nstaging_port: {staging}\ndrain_seconds: 10", registry.host))
            .commit("deploy to the test registry and ports");
        (live, staging)
    }
}

impl Registry {
    /// The environment that gives pymdeploy this registry's credentials.
    pub fn env(&self) -> [(&str, &str); 2] {
        [
            ("PYM_REGISTRY_USER", self.user.as_str()),
            ("PYM_REGISTRY_PASSWORD", self.password.as_str()),
        ]
    }
}

impl TestService {
    /// `pymdeploy new --lang LANG` with a name unique to this test run.
    pub fn new_lang(tag: &str, lang: &str) -> TestService {
        let name = format!("it-{tag}-{}", std::process::id());
        let root = temp_dir(tag).join(&name);
        let mut cmd = Command::new(pymdeploy_bin());
        cmd.arg("new")
            .arg(&name)
            .arg("--path")
            .arg(&root)
            .arg("--lang")
            .arg(lang);
        run(cmd).assert_ok();
        TestService { name, root }
    }

    /// A copy of a repository under `tests/fixtures/`, committed, named `it-<tag>-<pid>`
    /// (its containers and images removed on drop like a generated service's).
    pub fn from_fixture(fixture: &str, tag: &str) -> TestService {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                let name = e.file_name();
                if name == "__pycache__" || name == ".pytest_cache" {
                    continue;
                }
                if e.path().is_dir() {
                    copy(&e.path(), &to.join(&name))
                } else {
                    std::fs::copy(e.path(), to.join(&name)).unwrap();
                }
            }
        }
        let name = format!("it-{tag}-{}", std::process::id());
        let root = temp_dir(tag).join(&name);
        copy(&repo_root().join("tests/fixtures").join(fixture), &root);
        let svc = TestService { name, root };
        let st = Command::new("git")
            .args(["init", "-q"])
            .current_dir(&svc.root)
            .status()
            .unwrap();
        assert!(st.success());
        svc.commit("the service, before pymdeploy");
        svc
    }

    /// Live and staging on free ports of their own. Returns (live port, staging port).
    pub fn on_free_ports(&self) -> (u16, u16) {
        let (live, staging) = (free_port(), free_port());
        let text = self.read("pym-config.yaml");
        self.write(
            "pym-config.yaml",
            &format!("{text}live_port: {live}\nstaging_port: {staging}\ndrain_seconds: 10\n"),
        )
        .commit("free ports");
        (live, staging)
    }
}

/// Requests `/version` on `port` over `connections` keep-alive connections (one thread
/// each), as real clients and load tools do: a connection is reopened only when the
/// server said `Connection: close`. A request that gets no complete answer (reset, EOF,
/// timeout) or a non-2xx one is a failure: that is what a switch must never cause.
pub struct KeepAliveLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(usize, Vec<String>, usize)>>,
}

impl KeepAliveLoop {
    pub fn start(port: u16, connections: usize) -> KeepAliveLoop {
        KeepAliveLoop::start_at("127.0.0.1", port, connections)
    }

    /// `start` against `host:port`.
    pub fn start_at(host: &str, port: u16, connections: usize) -> KeepAliveLoop {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles = (0..connections)
            .map(|_| {
                let flag = stop.clone();
                let host = host.to_string();
                std::thread::spawn(move || keep_alive_client(&host, port, &flag))
            })
            .collect();
        KeepAliveLoop { stop, handles }
    }

    /// Stops the loop: (answers, failures, connections opened).
    pub fn finish(self) -> (usize, Vec<String>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = (0, Vec::new(), 0);
        for h in self.handles {
            let (ok, failures, opened) = h.join().unwrap();
            total.0 += ok;
            total.1.extend(failures);
            total.2 += opened;
        }
        total
    }
}

fn keep_alive_client(
    host: &str,
    port: u16,
    stop: &std::sync::atomic::AtomicBool,
) -> (usize, Vec<String>, usize) {
    use std::io::{BufRead, BufReader, Read, Write};
    let (mut ok, mut failures, mut opened) = (0usize, Vec::new(), 0usize);
    let started = std::time::Instant::now();
    let mut conn: Option<BufReader<std::net::TcpStream>> = None;
    // Bounded: at most ten minutes, at most 200 000 requests per connection.
    while !stop.load(std::sync::atomic::Ordering::SeqCst)
        && started.elapsed() < std::time::Duration::from_secs(600)
        && ok + failures.len() < 200_000
    {
        let reader = match &mut conn {
            Some(r) => r,
            None => match std::net::TcpStream::connect((host, port)) {
                Ok(s) => {
                    // Long enough that a slow answer on a loaded 2-core machine (builds
                    // run beside it) is told apart from a lost one.
                    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                        .unwrap();
                    opened += 1;
                    conn.insert(BufReader::new(s))
                }
                Err(e) => {
                    failures.push(format!("connect: {e} after {:?}", started.elapsed()));
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
            },
        };
        let answer = (|| -> std::io::Result<(u16, bool)> {
            write!(
                reader.get_mut(),
                "GET /version HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
            )?;
            let mut status_line = String::new();
            if reader.read_line(&mut status_line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection closed with the request unanswered",
                ));
            }
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let (mut length, mut close) = (0usize, false);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("connection:") && lower.contains("close") {
                    close = true;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            Ok((status, close))
        })();
        match answer {
            Ok((status, close)) => {
                if (200..300).contains(&status) {
                    ok += 1;
                } else {
                    failures.push(format!("status {status} after {:?}", started.elapsed()));
                }
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                failures.push(format!("{e} after {:?}", started.elapsed()));
                conn = None;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    (ok, failures, opened)
}

/// Opens `n` keep-alive connections to `port` at once, sends `GET /version` on each
/// without closing any, and counts those answered within `within`: a server that serves
/// only some connections while others stay open (a thread pool handing connections out
/// racily) answers fewer than `n`.
pub fn concurrent_keep_alive(port: u16, n: usize, within: std::time::Duration) -> usize {
    use std::io::{BufRead, BufReader, Write};
    let conns: Vec<std::net::TcpStream> = (0..n)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    for mut c in &conns {
        let _ = write!(c, "GET /version HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    }
    let deadline = std::time::Instant::now() + within;
    let answered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for c in &conns {
            let answered = &answered;
            scope.spawn(move || {
                let left = deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .max(std::time::Duration::from_millis(1));
                c.set_read_timeout(Some(left)).unwrap();
                let mut line = String::new();
                if BufReader::new(c).read_line(&mut line).is_ok_and(|k| k > 0)
                    && line.starts_with("HTTP/1.1 200")
                {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    answered.into_inner()
}

/// The actions a `--dry-run` printed (its numbered lines), in order.
pub fn planned_actions(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim_start().split_once(". "))
        .filter(|(n, _)| n.parse::<u32>().is_ok())
        .map(|(_, a)| a.to_string())
        .collect()
}

/// The actions a run reported as it took them (its `- ` lines), in order.
pub fn taken_actions(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .map(str::to_string)
        .collect()
}

/// A run in the background whose stderr is read as it comes, to act on it mid-way.
pub struct Spawned {
    child: std::process::Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    /// Everything read so far.
    pub seen: String,
}

impl Spawned {
    /// Reads until `marker` has been printed; panics if the run ends first.
    pub fn wait_for(&mut self, marker: &str) -> &mut Spawned {
        use std::io::BufRead;
        let mut line = String::new();
        while !self.seen.contains(marker) {
            line.clear();
            assert!(
                self.stderr.read_line(&mut line).unwrap() > 0,
                "the run ended before {marker:?}:\n{}",
                self.seen
            );
            self.seen.push_str(&line);
        }
        self
    }

    /// Waits for the run to end: its exit code and the rest of its output.
    pub fn finish(mut self) -> (Option<i32>, String) {
        use std::io::Read;
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        (self.child.wait().unwrap().code(), rest)
    }

    /// Ctrl-C: SIGINT, then the rest of its output. Returns (exit code, the rest, how long
    /// it took to end).
    pub fn interrupt(mut self) -> (Option<i32>, String, std::time::Duration) {
        use std::io::Read;
        let started = std::time::Instant::now();
        // The process group (see `spawn_pym_env`): pymdeploy and whatever it runs.
        assert!(
            Command::new("kill")
                .args(["-INT", "--", &format!("-{}", self.child.id())])
                .status()
                .unwrap()
                .success()
        );
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        (status.code(), rest, started.elapsed())
    }
}

impl TestService {
    /// `pymdeploy ARGS` in the background (see `Spawned`).
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Spawned {
        let mut child = self.spawn_pym_env(args, env);
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        Spawned {
            child,
            stderr,
            seen: String::new(),
        }
    }
}

/// An OpenSSH server on a free loopback port in front of this machine's engine: the
/// "remote" server of the remote-engine tests. Its host key and an authorized client key
/// are made fresh; `ssh_command` is the `PYM_SSH_COMMAND` that uses that key and trusts
/// exactly that host key.
pub struct Sshd {
    pub port: u16,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = temp_dir("sshd");
        let keygen = |file: &str| {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(file))
                .status()
                .expect("ssh-keygen runs (run .ci/setup)");
            assert!(st.success());
        };
        keygen("host_key");
        keygen("client_key");
        keygen("stranger_key");
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             PermitUserEnvironment no\nLogLevel VERBOSE\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd runs (run .ci/setup: openssh-server)");
        wait_listening(port, "sshd", &dir.join("sshd.log"));
        Sshd { port, dir, child }
    }

    /// `DOCKER_HOST` for the engine behind this server.
    pub fn docker_host(&self) -> String {
        format!("ssh://root@127.0.0.1:{}", self.port)
    }

    /// `PYM_SSH_COMMAND` logging in with `key` ("client_key", or "stranger_key" that the
    /// server does not know), checking the server's key against our known_hosts.
    pub fn ssh_command(&self, key: &str) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
            self.dir.join(key).display(),
            self.dir.join("known_hosts").display()
        )
    }

    /// How many logins the server accepted so far.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(self.dir.join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestService {
    /// The Flask fixture after `init`, committed, on free ports, deployed on the docker
    /// target through its own xtask: a service as a team has it before it moves.
    pub fn deployed_flask(tag: &str) -> TestService {
        let svc = TestService::from_fixture("flask-service", tag);
        svc.pym(&["init", "--name", &svc.name]).assert_ok();
        svc.commit("add the pymdeploy pipeline");
        let (live, _) = svc.on_free_ports();
        svc.xtask(&["deploy"]).assert_ok();
        assert_eq!(version_on(live).expect("live answers")["pym_env"], "live");
        svc
    }

    /// `pymdeploy target TARGET --set ... --commit`, checked: the keys the docker target
    /// alone reads commented out, the xtask's feature on, everything committed.
    pub fn switch_to(&self, target: &str, set: &[String]) -> Run {
        // Without the values the target needs and no terminal to ask on: refused, and
        // nothing changed.
        let before = self.read("pym-config.yaml");
        self.pym(&["target", target])
            .assert_failed()
            .assert_stderr_has(&format!("error: the {target} target needs docker_repo"))
            .assert_stderr_has("nothing was changed")
            .assert_stderr_has("hint: pass --set docker_repo=<registry>/<namespace>");
        assert_eq!(self.read("pym-config.yaml"), before);
        let mut args = vec!["target", target, "--commit"];
        for s in set {
            args.extend(["--set", s.as_str()]);
        }
        let r = self.pym(&args);
        r.assert_ok()
            .assert_stderr_has(&format!(
                "Commented pym-config.yaml: live_port (the {target} target does not read it)"
            ))
            .assert_stderr_has("Changed xtask/Cargo.toml")
            .assert_stderr_has(&format!("Committed Deploy to the {target} target"));
        let config = self.read("pym-config.yaml");
        assert!(
            config.contains(&format!("\ndeploy_target: {target}\n")),
            "{config}"
        );
        assert!(
            config.contains(&format!("\n# not read by the {target} target: live_port: ")),
            "{config}"
        );
        assert!(
            self.read("xtask/Cargo.toml")
                .contains(&format!("features = [\"{target}\"]")),
            "{}",
            self.read("xtask/Cargo.toml")
        );
        let status = Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(&self.root)
            .output()
            .unwrap();
        assert!(
            status.stdout.is_empty(),
            "left uncommitted: {}",
            String::from_utf8_lossy(&status.stdout)
        );
        r
    }
}

/// `status`'s table has a live row with `version`.
#[track_caller]
pub fn assert_live_runs(table: &str, version: &str) {
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("live ") && l.contains(version)),
        "{version} is not live:\n{table}"
    );
}

impl TestService {
    /// A `git clone` of this service under a temp directory of `tag`: the same package
    /// name and service id, another checkout.
    pub fn clone_to(&self, tag: &str) -> TestService {
        let root = temp_dir(tag).join(&self.name);
        let st = Command::new("git")
            .args(["clone", "-q"])
            .arg(&self.root)
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "git clone of {}", self.root.display());
        TestService {
            name: self.name.clone(),
            root,
        }
    }
}
