//! Canary releases and bakes on the docker target, on the real engine, under a bounded
//! loopback load: a version that fails a fifth of its requests is aborted at its first
//! step and no request reaches it after; a healthy one goes through every step, a bake
//! and is known-good, with no failed request; a client keeps one version through a step;
//! a version that breaks during its bake is switched back, within 2 s, to the previous
//! version's very container; rollback and cleanup go by the known-good versions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// The service's `/work`: 200 with its version.
pub(crate) const WORK_OK: &str =
    r#"("GET", "/work") => (200, serde_json::json!({ "version": info.version })),"#;

/// Gives the generated service a `/work` answered as `arm` (a match arm) says.
pub(crate) fn with_work(svc: &TestService, arm: &str) {
    let main = svc.read("src/main.rs");
    let (start, end) = ("/* work */ ", " /* end of work */\n        ");
    let main = match (main.find(start), main.find(end)) {
        (Some(a), Some(b)) => format!("{}{}", &main[..a], &main[b + end.len()..]),
        _ => main,
    };
    let patched = main.replacen(
        "(\"GET\", \"/ping\")",
        &format!("{start}{arm}{end}(\"GET\", \"/ping\")"),
        1,
    );
    assert_ne!(
        patched, main,
        "the generated service has no /ping arm to put /work beside"
    );
    svc.write("src/main.rs", &patched);
}

/// `/work` failing one request in five, on live only (staging's tests pass).
pub(crate) const WORK_FAILS_A_FIFTH: &str = r#"("GET", "/work") => {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            if info.pym_env == "live" && N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 5 == 0 {
                (500, serde_json::json!({ "error": "one in five" }))
            } else {
                (200, serde_json::json!({ "version": info.version }))
            }
        }"#;

/// `/work` failing every request once `/tmp/fail` exists in its container.
const WORK_FAILS_ON_DEMAND: &str = r#"("GET", "/work") => match std::path::Path::new("/tmp/fail").exists() {
            true => (500, serde_json::json!({ "error": "told to fail" })),
            false => (200, serde_json::json!({ "version": info.version })),
        },"#;

/// What a load saw: answers per version, failures (with when), and what each
/// connection kind got.
#[derive(Default, Debug)]
pub(crate) struct Seen {
    pub ok: usize,
    pub by_version: std::collections::BTreeMap<String, usize>,
    pub failures: Vec<String>,
}

/// A bounded loopback load on `/work`: `threads` clients, half on one keep-alive
/// connection each, half on a new connection per request; at most 10 minutes.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, threads: usize) -> Load {
        Load::start_at("127.0.0.1", port, threads)
    }

    /// `start` with `host` in each request's `Host` (a front door that routes by it).
    pub(crate) fn start_at(host: &str, port: u16, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|i| {
                let (stop, seen) = (stop.clone(), seen.clone());
                let host = host.to_string();
                std::thread::spawn(move || {
                    let keep_alive = i % 2 == 0;
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    while !stop.load(Ordering::SeqCst)
                        && started.elapsed() < Duration::from_secs(600)
                    {
                        let answer = ask(&host, port, "/work", None, keep_alive, &mut conn);
                        let mut s = seen.lock().unwrap();
                        match answer {
                            Ok((200, body, _)) => {
                                s.ok += 1;
                                let v: serde_json::Value =
                                    serde_json::from_str(&body).unwrap_or_default();
                                *s.by_version
                                    .entry(v["version"].as_str().unwrap_or("?").to_string())
                                    .or_default() += 1;
                            }
                            Ok((status, body, _)) => s.failures.push(format!(
                                "{status} {} after {:?}",
                                body.trim(),
                                started.elapsed()
                            )),
                            Err(e) => s.failures.push(format!(
                                "{e} after {:?} (keep-alive: {keep_alive})",
                                started.elapsed()
                            )),
                        }
                        drop(s);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            handles,
        }
    }

    /// The failures so far, and the answers.
    fn snapshot(&self) -> (usize, Vec<String>) {
        let s = self.seen.lock().unwrap();
        (s.ok, s.failures.clone())
    }

    pub(crate) fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            h.join().unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

/// One HTTP/1.1 GET: (status, body, the `pym-canary` cookie set, if any). On a kept
/// connection when `keep_alive` (reopened when the server closes it).
fn ask(
    host: &str,
    port: u16,
    path: &str,
    cookie: Option<&str>,
    keep_alive: bool,
    conn: &mut Option<BufReader<TcpStream>>,
) -> std::io::Result<(u16, String, Option<String>)> {
    if conn.is_none() || !keep_alive {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        *conn = Some(BufReader::new(s));
    }
    let c = conn.as_mut().unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    write!(
        c.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}{close}\r\n"
    )?;
    let mut status_line = String::new();
    if c.read_line(&mut status_line)? == 0 {
        *conn = None;
        return Err(std::io::Error::other("connection closed before an answer"));
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut closes, mut set_cookie) = (0usize, !keep_alive, None);
    loop {
        let mut line = String::new();
        c.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().unwrap_or(0),
            "connection" if v.trim().eq_ignore_ascii_case("close") => closes = true,
            "set-cookie" if v.trim().starts_with("pym-canary=") => {
                set_cookie = v.trim().split(';').next().map(str::to_string)
            }
            _ => {}
        }
    }
    let mut body = vec![0; length];
    c.read_exact(&mut body)?;
    if closes {
        *conn = None;
    }
    Ok((
        status,
        String::from_utf8_lossy(&body).to_string(),
        set_cookie,
    ))
}

/// The version `/work` answers with `cookie`, on a new connection.
fn work_version(port: u16, cookie: Option<&str>) -> (Option<String>, Option<String>) {
    match ask("127.0.0.1", port, "/work", cookie, false, &mut None) {
        Ok((200, body, set)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (v["version"].as_str().map(str::to_string), set)
        }
        _ => (None, None),
    }
}

/// What the live proxy counted for `version`'s container, since it started.
fn proxy_requests(svc: &TestService, version: &str) -> u64 {
    let text = docker(&[
        "exec",
        &format!("pym-{}-proxy", svc.name),
        "/usr/local/bin/pym-proxy",
        "__proxy-counts",
        "--prometheus",
    ]);
    let upstream = format!("pym-{}-live-{version}:8080", svc.name);
    text.lines()
        .filter(|l| {
            l.starts_with(&format!(
                "pym_proxy_requests_total{{upstream=\"{upstream}\""
            ))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `out` says `version` passed each step of `shares`, then its bake.
#[track_caller]
pub(crate) fn assert_passed(out: &str, version: &str, shares: &[u8]) {
    let lines = shares
        .iter()
        .map(|s| format!("pass {version}, the {s}% step"))
        .chain([format!("pass {version}, the bake")]);
    for line in lines {
        assert!(out.contains(&line), "no `{line}`:\n{out}");
    }
}

/// The JSON events of a `--json` run.
fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn judgements(stdout: &str) -> Vec<serde_json::Value> {
    events(stdout)
        .into_iter()
        .filter(|e| e["event"] == "judgement")
        .collect()
}

fn set_rollout(svc: &TestService, rollout: &str, message: &str) {
    svc.write("pym-config.live.yaml", &format!("rollout: {rollout}\n"))
        .commit(message);
}

/// Deploy steps that matter here: the unit tests and the local acceptance run are the
/// other tests' business.
const DEPLOY: &[&str] = &["deploy", "--skip", "test", "--skip", "accept-local"];

#[test]
#[cfg_attr(pym_no_engine, ignore = "needs a Docker engine: see build.rs")]
fn a_canary_failing_a_fifth_of_its_requests_is_aborted_and_a_healthy_one_goes_through() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("canary");
    let (live, _) = svc.for_docker_target(&reg);
    with_work(&svc, WORK_OK);
    set_rollout(
        &svc,
        "{strategy: canary, steps: [20, 50], step_seconds: 4, bake_seconds: 4, max_error_rate: 0.05, min_requests: 20}",
        "v1: a canary rollout",
    );
    // The first version has nothing to be judged against: it goes live whole.
    let first = svc.pym_env(DEPLOY, &reg.env());
    first.assert_ok();
    assert!(!first.stderr.contains("judge "), "{}", first.stderr);
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();

    // v2 fails a fifth of its requests: aborted at its first step.
    with_work(&svc, WORK_FAILS_A_FIFTH);
    svc.commit("v2: fails one request in five");
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    let load = Load::start(live, 6);
    let mut args = DEPLOY.to_vec();
    args.push("--json");
    let r = svc.pym_env(&args, &reg.env());
    r.assert_failed().assert_stderr_has(&format!(
        "the new version {v2} breached a threshold in the 20% step"
    ));
    assert!(
        !r.stderr.contains("send 50%"),
        "aborted at the first step:\n{}",
        r.stderr
    );
    let j = judgements(&r.stdout);
    assert_eq!(j.len(), 1, "{}", r.stdout);
    assert_eq!(
        (j[0]["verdict"].as_str(), j[0]["share"].as_u64()),
        (Some("breach"), Some(20))
    );
    assert!(
        j[0]["figures"]["requests"].as_u64().unwrap() >= 20
            && j[0]["error_rate"].as_f64().unwrap() > 0.05,
        "{}",
        j[0]
    );
    // Live serves v1 alone; the proxy sends v2 nothing more.
    let (ok_at_abort, _) = load.snapshot();
    let reached = proxy_requests(&svc, &v2);
    assert!(reached >= 20, "{reached}");
    wait_until(
        "more answers after the abort",
        Duration::from_secs(10),
        || load.snapshot().0 > ok_at_abort + 200,
    );
    assert_eq!(
        proxy_requests(&svc, &v2),
        reached,
        "a request reached the aborted canary"
    );
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());
    let left = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=pym-{}-live-{v2}", svc.name),
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        left.trim().is_empty(),
        "the aborted canary's container stays: {left}"
    );
    // The run's history record keeps the judgement with its figures.
    let history = svc.pym(&["history", "--json"]).assert_ok().stdout.clone();
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(last["judgements"][0]["verdict"], "breach", "{last}");
    assert!(
        last["judgements"][0]["figures"]["errors"].as_u64().unwrap() > 0,
        "{last}"
    );
    let seen = load.finish();
    assert!(seen.by_version.contains_key(&v1), "{seen:?}");

    // v3, healthy: every step, the bake, known-good; no failed request.
    with_work(&svc, WORK_OK);
    svc.edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v3: healthy");
    let v3 = svc.pym(&["version"]).stdout.trim().to_string();
    let load = Load::start(live, 6);
    let mut run = svc.spawn(DEPLOY, &reg.env());
    // During the 50% step, a client with its cookie sees one version; clients without
    // one see both.
    run.wait_for("send 50% of live's requests");
    std::thread::sleep(Duration::from_millis(300));
    let (first_version, cookie) = work_version(live, None);
    let cookie = cookie.expect("a client new to a running canary gets its cookie");
    let mut versions = std::collections::BTreeSet::new();
    for _ in 0..100 {
        versions.insert(work_version(live, Some(&cookie)).0.unwrap_or_default());
    }
    assert_eq!(versions.len(), 1, "{versions:?} with {cookie}");
    assert_eq!(versions.into_iter().next(), first_version);
    let mut anyone = std::collections::BTreeSet::new();
    for _ in 0..60 {
        anyone.extend(work_version(live, None).0);
    }
    assert_eq!(
        anyone,
        [v1.clone(), v3.clone()].into(),
        "without a cookie, both at 50%"
    );
    let said = run.seen.clone();
    let (code, rest) = run.finish();
    assert_eq!(code, Some(0), "{said}{rest}");
    crate::canary::assert_passed(&format!("{said}{rest}"), &v3, &[20, 50]);
    let seen = load.finish();
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed across the canary: {:?}",
        seen.failures.len(),
        seen.ok + seen.failures.len(),
        seen.failures
    );
    assert!(
        seen.by_version.get(&v3).is_some_and(|n| *n > 50),
        "{seen:?}"
    );
    assert_eq!(version_on(live).unwrap()["version"], v3.as_str());
    let status = svc.pym(&["status"]).assert_ok().stdout.clone();
    let row = status
        .lines()
        .find(|l| l.starts_with("live ") && l.contains(&v3))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        row.contains("/s") && row.contains("0%"),
        "rate and error rate over the last minute:\n{status}"
    );

    // Ctrl-C during a step: answered within 2 s, live back on v3 alone, the canary gone
    // and recorded as rolled back from (deploying it again takes --redeploy).
    svc.edit("src/main.rs", "\"no such route\"", "\"nothing here\"")
        .commit("v4");
    let v4 = svc.pym(&["version"]).stdout.trim().to_string();
    let load = Load::start(live, 4);
    let mut run = svc.spawn(DEPLOY, &reg.env());
    run.wait_for("send 20% of live's requests");
    std::thread::sleep(Duration::from_millis(800));
    let (code, rest, took) = run.interrupt();
    assert_eq!(code, Some(130), "{rest}");
    assert!(
        took < Duration::from_secs(2),
        "Ctrl-C answered in {took:?}:\n{rest}"
    );
    assert_eq!(version_on(live).unwrap()["version"], v3.as_str());
    let left = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=pym-{}-live-{v4}", svc.name),
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        left.trim().is_empty(),
        "the interrupted canary's container stays: {left}"
    );
    let seen = load.finish();
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    svc.pym_env(DEPLOY, &reg.env())
        .assert_failed()
        .assert_stderr_has(&format!("{v4} was rolled back from"));
}

#[test]
#[cfg_attr(pym_no_engine, ignore = "needs a Docker engine: see build.rs")]
fn a_version_that_breaks_in_its_bake_is_switched_back_to_the_running_known_good_one() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("bake");
    let (live, _) = svc.for_docker_target(&reg);
    svc.edit(
        "pym-config.yaml",
        "drain_seconds: 10",
        "drain_seconds: 10\nkeep_previous: 1",
    );
    with_work(&svc, WORK_FAILS_ON_DEMAND);
    set_rollout(
        &svc,
        "{strategy: canary, steps: [50], step_seconds: 3, bake_seconds: 4, max_error_rate: 0.02, min_requests: 20}",
        "v1",
    );
    svc.pym_env(DEPLOY, &reg.env()).assert_ok();
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    let load = Load::start(live, 4);
    // v2 passes its bake: known-good.
    svc.edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v2");
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    svc.pym_env(DEPLOY, &reg.env())
        .assert_ok()
        .assert_stderr_has(&format!("pass {v2}, the bake"));
    let v2_container = format!("pym-{}-live-{v2}", svc.name);
    let id_before = docker(&[
        "inspect",
        "-f",
        "{{.Id}} {{.State.StartedAt}}",
        &v2_container,
    ]);

    // v3 breaks 30 s into its bake.
    set_rollout(
        &svc,
        "{strategy: canary, steps: [50], step_seconds: 3, bake_seconds: 60, max_error_rate: 0.02, min_requests: 20}",
        "v3: a longer bake",
    );
    let v3 = svc.pym(&["version"]).stdout.trim().to_string();
    let mut run = svc.spawn(DEPLOY, &reg.env());
    run.wait_for(&format!("bake {v3} at 100%"));
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        work_version(live, None).0.as_deref(),
        Some(v3.as_str()),
        "v3 has all of live in its bake"
    );
    let broke = Instant::now();
    docker(&[
        "exec",
        &format!("pym-{}-live-{v3}", svc.name),
        "touch",
        "/tmp/fail",
    ]);
    // Live answers v2 again within 2 s of the breach.
    let mut back = None;
    while broke.elapsed() < Duration::from_secs(10) {
        if work_version(live, None).0.as_deref() == Some(v2.as_str()) {
            back = Some(broke.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = back.expect("live went back to v2");
    let said = run.seen.clone();
    let (code, rest) = run.finish();
    assert_ne!(code, Some(0), "{said}{rest}");
    assert!(
        rest.contains(&format!(
            "the new version {v3} breached a threshold in the bake"
        )),
        "{said}{rest}"
    );
    assert!(
        back < Duration::from_secs(2),
        "switched back {back:?} after the breach"
    );
    eprintln!("switched back {back:?} after the breach");
    // The same container, never restarted.
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.Id}} {{.State.StartedAt}}",
            &v2_container
        ]),
        id_before
    );
    let seen = load.finish();
    assert!(seen.by_version.contains_key(&v3), "{seen:?}");

    // v4 passes its bake; a bare rollback would go to v2, the last known-good (v3 was
    // rolled back from, v1 never baked); cleanup keeps it and removes v1.
    set_rollout(
        &svc,
        "{strategy: canary, steps: [50], step_seconds: 3, bake_seconds: 4, max_error_rate: 0.02, min_requests: 20}",
        "v4",
    );
    let v4 = svc.pym(&["version"]).stdout.trim().to_string();
    let load = Load::start(live, 4);
    svc.pym_env(DEPLOY, &reg.env()).assert_ok();
    load.finish();
    let dry = svc
        .pym(&["rollback", "--dry-run"])
        .assert_ok()
        .stdout
        .clone();
    assert!(
        dry.contains(&format!(
            "start pym-{}-live-{v2} again: the last known-good version",
            svc.name
        )),
        "{dry}"
    );
    svc.pym(&["cleanup", "--execute"]).assert_ok();
    let containers = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=org.pymacaron.service-id={}", svc.service_id()),
        "--format",
        "{{.Names}}",
    ]);
    assert!(containers.lines().any(|c| c.ends_with(&v2)), "{containers}");
    assert!(
        !containers.lines().any(|c| c.ends_with(&v1)),
        "{containers}"
    );
    assert_eq!(version_on(live).unwrap()["version"], v4.as_str());
}
