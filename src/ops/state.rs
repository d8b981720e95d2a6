//! What pymdeploy keeps between runs, outside the engine: the deploy lock, the journal
//! of the current run (for `deploy --resume`), and the history of deploys.
//!
//! The lock and the history live in the state directory (`$PYM_STATE_DIR`, else
//! `$XDG_STATE_HOME/pymdeploy`, else `~/.local/state/pymdeploy`), keyed by service and
//! target, so every checkout of a service on this machine shares them. The journal lives
//! in the service root (`.pym/journal.json`), beside the build it describes.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::hinted;

pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PYM_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("pymdeploy");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/pymdeploy")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn deploy_command() -> String {
    "deploy".into()
}

/// Who runs this: git's `user.email` for the service (what its commits say), else the
/// login name, else the name of the process's user.
pub fn user(root: &Path) -> String {
    if let Ok(out) = std::process::Command::new("git")
        .args(["config", "user.email"])
        .current_dir(root)
        .output()
    {
        let email = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !email.is_empty() {
            return email;
        }
    }
    if let Ok(name) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return name;
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy at once.
    let name = unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() {
            None
        } else {
            Some(
                std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    name.unwrap_or_else(|| format!("uid-{}", unsafe { libc::getuid() }))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub pid: i32,
    pub since: i64,
    pub command: String,
}

impl Holder {
    /// This process, running `command`.
    pub fn me(command: &str) -> Holder {
        Holder {
            user: user(Path::new(".")),
            host: hostname(),
            pid: std::process::id() as i32,
            since: now(),
            command: command.into(),
        }
    }

    /// True when the holder provably no longer runs: a process of this very host that
    /// no longer exists. A holder on another host is never presumed gone.
    pub fn is_gone(&self) -> bool {
        // SAFETY: kill with signal 0 only checks that the process exists.
        self.host == hostname()
            && self.pid > 0
            && unsafe { libc::kill(self.pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    pub fn describe(&self) -> String {
        format!(
            "{}@{} (pid {}, `{}`) since {}",
            self.user,
            self.host,
            self.pid,
            self.command,
            crate::version::fmt_utc(self.since)
        )
    }
}

/// Held while a deploy runs; released on drop, or by the kernel when the process dies.
pub struct Lock {
    file: std::fs::File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Emptied, so nobody reads a finished holder; the file stays (removing it would
        // let a second process lock a fresh file while a third still holds the old one).
        let _ = self.file.set_len(0);
    }
}

/// Takes the lock `key` (`<service>-<target>`) with `flock(2)` on a file in the state
/// directory: atomic, and released by the kernel when its holder exits however it exits,
/// so a lock is never left behind and never guessed stale. Fails at once, naming the
/// holder, when another process holds it. A holder record left by a process that died
/// is reported as taken over.
pub fn lock(key: &str, command: &str, break_lock: bool, warn: impl Fn(&str)) -> Result<Lock> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let dir = state_dir().join("locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{key}.lock"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; LOCK_NB makes it return at once.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let previous: Option<Holder> = serde_json::from_str(&text).ok();
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        let who = previous
            .map(|h| h.describe())
            .unwrap_or_else(|| "another deploy that is starting".into());
        let hint = match break_lock {
            true => "--break-lock cannot take the lock from a deploy that is still running on this machine: stop that process first".to_string(),
            false => "wait for that deploy to finish (the lock is released when its process exits, however it exits)".to_string(),
        };
        return Err(hinted(format!("{key} is being deployed by {who}"), hint));
    }
    if let Some(h) = previous {
        warn(&format!(
            "taking over the deploy lock of {key} from {}: that process is gone (its run was interrupted)",
            h.describe()
        ));
    }
    let me = Holder::me(command);
    file.set_len(0)
        .and_then(|()| file.rewind())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(serde_json::to_string(&me)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Lock { file })
}

/// The record of a deploy in progress, rewritten after each step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    pub version: String,
    pub started: i64,
    /// The steps the run chose (after --from, --to, --skip, --no-*), for --resume.
    #[serde(default)]
    pub selected: Vec<String>,
    pub done: Vec<String>,
    pub built_image: Option<String>,
    pub pushed: Option<String>,
    pub finished: bool,
}

pub fn journal_path(root: &Path) -> PathBuf {
    root.join(".pym/journal.json")
}

pub fn read_journal(root: &Path) -> Result<Option<Journal>> {
    let path = journal_path(root);
    match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
            hinted(
                format!("{} is not a journal pymdeploy can read: {e}", path.display()),
                format!("remove it (`rm {}`) and deploy without --resume: the run it recorded cannot be resumed", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn write_journal(root: &Path, journal: &Journal) -> Result<()> {
    let path = journal_path(root);
    std::fs::create_dir_all(path.parent().unwrap())
        .with_context(|| format!("cannot create {}", path.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(journal)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// One finished deploy, as `history` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// `deploy`, `rollback`, `promote`, `cleanup`, …
    #[serde(default = "deploy_command")]
    pub command: String,
    pub user: String,
    pub host: String,
    pub sha: String,
    pub version: String,
    pub digest: Option<String>,
    pub target: String,
    pub started: i64,
    pub duration_ms: u64,
    pub outcome: String,
    pub steps: Vec<StepRecord>,
    /// Each judgement of a canary step or a bake: its figures and verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judgements: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub outcome: String,
    pub duration_ms: u64,
}

fn history_path(name: &str) -> PathBuf {
    state_dir().join("history").join(format!("{name}.jsonl"))
}

/// What the history and the lock are kept under: the service on its target.
pub fn key(config: &crate::config::Config) -> String {
    format!("{}-{}", config.name, config.deploy_target)
}

/// The digest an earlier push of `version` recorded in this machine's history, if any.
pub fn pushed_digest(config: &crate::config::Config, version: &str) -> Result<Option<String>> {
    let records = history(&key(config), |_| {})?;
    Ok(records
        .into_iter()
        .rev()
        .filter(|r| r.version == version)
        .find_map(|r| r.digest))
}

pub fn record(name: &str, rec: &Record) -> Result<()> {
    use std::io::Write;
    let path = history_path(name);
    std::fs::create_dir_all(path.parent().unwrap())
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(rec)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Every deploy recorded for `name`; a line that is not a record (a write cut short, an
/// edit) is passed over with a warning, not a failure.
pub fn history(name: &str, warn: impl Fn(&str)) -> Result<Vec<Record>> {
    let path = history_path(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            Err(e) => warn(&format!(
                "{}:{}: not a deploy record, passed over: {e}",
                path.display(),
                i + 1
            )),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The race a lock file written after its creation had: ten deploys at once, twenty
    /// rounds, never two holders. flock locks are per open file, so threads of one
    /// process contend as separate processes do.
    #[test]
    fn ten_concurrent_takers_never_hold_the_lock_together() {
        let dir = std::env::temp_dir().join(format!("pym-lock-race-{}", std::process::id()));
        // SAFETY: only this test reads PYM_STATE_DIR in this test binary.
        unsafe { std::env::set_var("PYM_STATE_DIR", &dir) };
        let holders = AtomicUsize::new(0);
        let (most, taken) = (AtomicUsize::new(0), AtomicUsize::new(0));
        for _round in 0..20 {
            std::thread::scope(|s| {
                for _ in 0..10 {
                    s.spawn(|| {
                        if let Ok(lock) = lock("race-docker", "deploy", false, |_| {}) {
                            let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            taken.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            holders.fetch_sub(1, Ordering::SeqCst);
                            drop(lock);
                        }
                    });
                }
            });
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "two deploys held the lock at once"
        );
        assert!(
            taken.load(Ordering::SeqCst) >= 20,
            "each round, someone gets the lock"
        );
        // A holder that is gone (its record left behind, no flock on the file) is taken
        // over with a word; one that holds the flock is named.
        let path = dir.join("locks/race-docker.lock");
        let gone = Holder {
            user: "ann".into(),
            host: "ci-1".into(),
            pid: 999_999,
            since: 0,
            command: "deploy".into(),
        };
        std::fs::write(&path, serde_json::to_string(&gone).unwrap()).unwrap();
        let warned = std::sync::Mutex::new(String::new());
        let held = lock("race-docker", "deploy", false, |m| {
            *warned.lock().unwrap() = m.to_string()
        })
        .unwrap();
        assert!(
            warned
                .lock()
                .unwrap()
                .contains("from ann@ci-1 (pid 999999, `deploy`)"),
            "{}",
            warned.lock().unwrap()
        );
        let e = lock("race-docker", "rollback", true, |_| {})
            .err()
            .expect("a held lock is refused, --break-lock or not");
        assert!(
            format!("{e}").contains(&format!(
                "race-docker is being deployed by {}@",
                user(Path::new("."))
            )),
            "{e}"
        );
        drop(held);
        lock("race-docker", "deploy", false, |m| {
            panic!("a released lock warns: {m}")
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
