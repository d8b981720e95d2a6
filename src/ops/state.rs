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
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/pymdeploy")
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
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

pub fn user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 checks for existence without sending anything.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub pid: i32,
    pub since: i64,
    pub command: String,
}

/// Held while a deploy runs; released on drop.
pub struct Lock {
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes the lock `key` (`<service>-<target>`). Fails at once, naming the holder, when
/// another deploy holds it. A lock whose holder was a process of this host that no longer
/// exists is stale and is taken over with a warning; `break_lock` takes over any lock.
pub fn lock(key: &str, command: &str, break_lock: bool, warn: impl Fn(&str)) -> Result<Lock> {
    let dir = state_dir().join("locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{key}.lock"));
    let me = Holder { user: user(), host: hostname(), pid: std::process::id() as i32, since: now(), command: command.into() };
    for _ in 0..3 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => {
                serde_json::to_writer(&file, &me).with_context(|| format!("cannot write {}", path.display()))?;
                return Ok(Lock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder: Option<Holder> = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
                let stale = holder.as_ref().is_some_and(|h| h.host == me.host && !pid_alive(h.pid));
                let who = holder
                    .as_ref()
                    .map(|h| format!("{}@{} (pid {}, `{}`) since {}", h.user, h.host, h.pid, h.command, crate::version::fmt_utc(h.since)))
                    .unwrap_or_else(|| "an unreadable lock".into());
                if break_lock || stale || holder.is_none() {
                    warn(&format!("taking over the deploy lock of {key} from {who}{}", if stale { ": that process is gone" } else { "" }));
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                return Err(hinted(
                    format!("{key} is being deployed by {who}"),
                    format!("wait for that deploy to finish; if it is gone, run again with --break-lock (the lock is {})", path.display()),
                ));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    anyhow::bail!("cannot take the deploy lock {}: it keeps coming back", path.display())
}

/// The record of a deploy in progress, rewritten after each step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    pub version: String,
    pub started: i64,
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
        Ok(t) => Ok(Some(serde_json::from_str(&t).with_context(|| format!("{} is not a journal", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn write_journal(root: &Path, journal: &Journal) -> Result<()> {
    let path = journal_path(root);
    std::fs::create_dir_all(path.parent().unwrap()).with_context(|| format!("cannot create {}", path.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(journal)?).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// One finished deploy, as `history` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
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

pub fn record(name: &str, rec: &Record) -> Result<()> {
    use std::io::Write;
    let path = history_path(name);
    std::fs::create_dir_all(path.parent().unwrap()).with_context(|| format!("cannot create {}", path.display()))?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(rec)?).with_context(|| format!("cannot write {}", path.display()))
}

pub fn history(name: &str) -> Result<Vec<Record>> {
    let path = history_path(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).with_context(|| format!("a bad line in {}", path.display()))).collect()
}
