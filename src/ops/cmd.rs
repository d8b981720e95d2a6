//! Child processes: the configured test and acceptance commands, cargo.
//!
//! Commands are built with `xshell::cmd!` or split from config with `shell_words` and
//! passed as an argument vector: nothing is ever spliced into a shell string, so a config
//! value cannot inject a command. Output (stdout and stderr, merged in arrival order) is
//! fed line by line to the step's progress, which folds it on a terminal, prints it
//! plainly elsewhere, and shows all of it when the command fails.
//!
//! Each command runs in a process group of its own. On Ctrl-C (or SIGTERM) our handler
//! forwards SIGINT to that whole group (cargo and the test binaries it started), then
//! SIGKILL after a grace period, so the step returns promptly and can clean up.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xshell::Shell;

use crate::output::StepProgress;

/// A command from config, split into words like a shell would but never run by one.
pub fn from_config<'a>(sh: &'a Shell, line: &str) -> Result<xshell::Cmd<'a>> {
    let words =
        shell_words::split(line).with_context(|| format!("cannot split `{line}` into words"))?;
    let (program, args) = words
        .split_first()
        .with_context(|| "the command is empty".to_string())?;
    Ok(sh.cmd(program).args(args))
}

/// Whether a command from config can start: its program is on `PATH` (or, written with
/// a `/`, a file under `root`), and `python -m MODULE` finds its module. The error says
/// which part is missing, in words the caller wraps with the key it came from.
pub fn check_program(root: &Path, line: &str) -> Result<()> {
    let words =
        shell_words::split(line).with_context(|| format!("cannot split `{line}` into words"))?;
    let Some(program) = words.first() else {
        anyhow::bail!("the command is empty");
    };
    let found = if program.contains('/') {
        Some(root.join(program)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
    };
    let Some(found) = found else {
        anyhow::bail!("`{program}` is not a program on this machine's PATH");
    };
    if let [_, flag, module, ..] = &words[..]
        && flag == "-m"
        && program.starts_with("python")
    {
        let sh = Shell::new()?;
        let import = format!("import {}", module.split('.').next().unwrap_or(module));
        let ok = xshell::cmd!(sh, "{found} -c {import}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok();
        if !ok {
            anyhow::bail!("`{program}` has no module `{module}`");
        }
    }
    Ok(())
}

/// Runs `cmd` to completion with its output folded into `progress`. Returns the
/// command's stdout when `capture_stdout` is set (then only stderr goes to progress).
pub fn stream(
    cmd: xshell::Cmd<'_>,
    dir: &Path,
    progress: &StepProgress<'_>,
    capture_stdout: bool,
) -> Result<String> {
    stream_within(cmd, dir, progress, capture_stdout, None)
}

/// `stream`, and a command still running after `limit` (the config key it comes from,
/// and its value) is stopped with its whole process group and reported.
pub fn stream_within(
    cmd: xshell::Cmd<'_>,
    dir: &Path,
    progress: &StepProgress<'_>,
    capture_stdout: bool,
    limit: Option<(&str, Duration)>,
) -> Result<String> {
    let display = cmd.to_string();
    let mut command: Command = cmd.into();
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|e| {
        let program = display.split_whitespace().next().unwrap_or("").to_string();
        if e.kind() == std::io::ErrorKind::NotFound {
            crate::error::hinted(
                format!("cannot run `{display}`: `{program}` was not found"),
                format!("install `{program}` or change the command in pym-config.yaml"),
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot run `{display}`"))
        }
    })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (captured, status) = std::thread::scope(|s| {
        let err_lines = s.spawn(|| forward(stderr, progress));
        let out = s.spawn(|| {
            if capture_stdout {
                let mut buf = String::new();
                let _ = BufReader::new(stdout).read_to_string(&mut buf);
                buf
            } else {
                forward(stdout, progress);
                String::new()
            }
        });
        let status = wait_or_interrupt(&mut child, limit.map(|(_, d)| d));
        let _ = err_lines.join();
        (out.join().unwrap_or_default(), status)
    });
    let (status, timed_out) = status.with_context(|| format!("cannot wait for `{display}`"))?;
    if let (true, Some((key, limit))) = (timed_out, limit) {
        return Err(crate::error::hinted(
            format!(
                "`{display}` did not finish within {}s (`{key}`): it was stopped, with every process it started",
                limit.as_secs()
            ),
            format!(
                "find what hangs (its output is above), or raise `{key}` in pym-config.yaml if it is only slow"
            ),
        ));
    }
    if crate::ops::interrupted() {
        return Err(anyhow::Error::new(crate::error::Interrupted)
            .context(format!("`{display}` was stopped")));
    }
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
        anyhow::bail!("`{display}` {how}");
    }
    Ok(captured)
}

/// Waits for the child; if the run is interrupted meanwhile, or `limit` passes, stops its
/// process group: SIGINT (SIGTERM for a time-out) first, SIGKILL if it is still there
/// after five seconds. Returns the status and whether the limit stopped it.
fn wait_or_interrupt(
    child: &mut std::process::Child,
    limit: Option<Duration>,
) -> std::io::Result<(ExitStatus, bool)> {
    let group = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut signalled: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        if let Some(status) = child.try_wait()? {
            if signalled.is_some() {
                // The child is gone; what it started in its group may not be (a process
                // that ignores SIGTERM, or one not yet scheduled to die): kill the group
                // outright, and give it half a second to empty.
                // SAFETY: as below.
                unsafe { libc::kill(-group, libc::SIGKILL) };
                let until = Instant::now() + Duration::from_millis(500);
                // SAFETY: signal 0 only asks whether the group still has a process.
                while Instant::now() < until && unsafe { libc::kill(-group, 0) } == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            return Ok((status, timed_out));
        }
        timed_out = timed_out || limit.is_some_and(|l| started.elapsed() >= l);
        if crate::ops::interrupted() || timed_out {
            match signalled {
                None => {
                    let signal = if timed_out {
                        libc::SIGTERM
                    } else {
                        libc::SIGINT
                    };
                    // SAFETY: kill(2) with a negative pid signals our child's own group.
                    unsafe { libc::kill(-group, signal) };
                    signalled = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(5) => {
                    // SAFETY: as above.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn forward(pipe: impl Read, progress: &StepProgress<'_>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        progress.line(&String::from_utf8_lossy(&buf));
        buf.clear();
    }
}
