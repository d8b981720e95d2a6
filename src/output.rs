//! The one printer: everything the pipeline says goes through here.
//!
//! Status goes to stderr, data (config dumps, versions, URLs) to stdout. On a terminal a
//! running step is an indicatif spinner whose message is the last line of the step's
//! output; elsewhere (CI, pipes) every line is printed plainly, indented under the step's
//! header, and under GitHub Actions each step is a `::group::`. `NO_COLOR` turns colour
//! off. Every line passes through the secret masker first, so a value listed in
//! `env_secrets` never reaches the screen, a log or CI output.
//!
//! Under GitHub Actions (`GITHUB_ACTIONS=true`) the printer also speaks the runner's
//! workflow commands, on stderr with everything else it says, so they keep their order
//! with the lines around them: each secret is sent as `::add-mask::` when it is
//! registered (before any line could carry it, and so masked in every later step of the
//! job too), and the final error and the failures a test runner reports become
//! `::error file=…,line=…::` annotations on the file and line they name.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use console::Style;
use indicatif::{ProgressBar, ProgressStyle};

/// How status is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Spinners and folded output on an interactive terminal.
    Progress,
    /// One plain line per event: CI logs, pipes, files.
    Plain,
}

/// Secret values, shared by every printer of the process.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The shortest value (or line of a value) that is masked.
pub const MIN_SECRET: usize = 8;

/// Whether a secret's value is too short to be masked (see `Printer::add_secret`).
pub fn short_secret(value: &str) -> bool {
    value
        .lines()
        .any(|l| !l.trim().is_empty() && l.trim_end_matches('\r').len() < MIN_SECRET)
}

pub struct Printer {
    mode: Mode,
    color: bool,
    github: bool,
    json: std::sync::atomic::AtomicBool,
}

/// What became of a step, for the summary table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Skipped,
}

impl Outcome {
    /// The word records and reports give it: `ok`, `failed`, `skipped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StepReport {
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
    /// One short line: "reused image hello:…", "12 passed", the failure's headline.
    pub note: String,
    /// A failed step's last lines of output (masked), for the run's summary.
    pub tail: Vec<String>,
}

/// How many of a failed step's last lines the run's summary shows.
pub const TAIL_LINES: usize = 30;

/// The directory relative paths in a run's messages are relative to (the service root),
/// for the files annotations name; shared by every printer of the process.
static SOURCE_ROOT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Says where the service root is, once it is known.
pub fn set_source_root(root: &Path) {
    *SOURCE_ROOT.lock().unwrap() = Some(root.to_path_buf());
}

/// Whether this process runs as a step of a GitHub Actions job.
pub fn in_github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// The data of a workflow command (what follows `::`), escaped as the runner unescapes it.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A property of a workflow command (`file=`, `title=`), escaped as the runner unescapes it.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// A file a message names, as the repository names it: relative to
/// `$GITHUB_WORKSPACE` where it lies in it (the service may be a directory of a larger
/// repository), else as written.
fn workspace_path(file: &str) -> String {
    let path = match SOURCE_ROOT.lock().unwrap().as_ref() {
        Some(root) if Path::new(file).is_relative() => root.join(file),
        _ => PathBuf::from(file),
    };
    std::env::var_os("GITHUB_WORKSPACE")
        .and_then(|ws| {
            let ws = std::fs::canonicalize(&ws).unwrap_or_else(|_| PathBuf::from(&ws));
            let path = std::fs::canonicalize(&path).unwrap_or(path.clone());
            path.strip_prefix(&ws).ok().map(|p| p.display().to_string())
        })
        .unwrap_or_else(|| file.to_string())
}

/// A place in a file that a message names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub line: Option<u32>,
    pub col: Option<u32>,
    pub message: String,
}

/// The first `file:line[:col]: message` in `text`, at its start or after a `: ` (an
/// error's context before it): `pym-config.yaml:3:1: unknown key`, `step failed:
/// pym-config.staging.yaml:2: key ...`. The file has an extension; a URL is no file.
pub fn locate(text: &str) -> Option<Located> {
    let starts = std::iter::once(0).chain(text.match_indices(": ").map(|(i, _)| i + 2));
    for start in starts {
        let rest = &text[start..];
        let Some((place, message)) = rest.split_once(": ") else {
            continue;
        };
        let mut parts = place.split(':');
        let file = parts.next().unwrap_or("");
        let numbers: Vec<Option<u32>> = parts.map(|p| p.parse().ok()).collect();
        let named_file = !file.is_empty()
            && !file.contains(char::is_whitespace)
            && Path::new(file).extension().is_some()
            && !file.contains("//");
        if named_file && (1..=2).contains(&numbers.len()) && numbers.iter().all(Option::is_some) {
            return Some(Located {
                file: file.to_string(),
                line: numbers[0],
                col: numbers.get(1).copied().flatten(),
                message: message.to_string(),
            });
        }
    }
    None
}

/// Reads the failures a test runner prints, with their file and line: pytest's
/// `path.py:12: AssertionError` after the `E   ...` lines of its message, and a Rust
/// test's `panicked at src/x.rs:12:5:` with the line after it.
#[derive(Default)]
struct FailureReader {
    said: Vec<String>,
    panic_at: Option<(String, u32)>,
    found: Vec<Located>,
}

impl FailureReader {
    fn add_line(&mut self, line: &str) {
        if let Some((file, n)) = self.panic_at.take() {
            let message = line.trim().to_string();
            self.push(
                file,
                n,
                if message.is_empty() {
                    "panicked".into()
                } else {
                    message
                },
            );
            return;
        }
        let trimmed = line.trim();
        if let Some(said) = trimmed.strip_prefix("E ") {
            self.said.push(said.trim().to_string());
            return;
        }
        if let Some(i) = trimmed.find("panicked at ") {
            let place = trimmed[i + 12..].trim_end_matches(':');
            let mut parts = place.rsplitn(3, ':');
            let (_col, n, file) = (parts.next(), parts.next(), parts.next());
            if let (Some(file), Some(Ok(n))) = (file, n.map(str::parse::<u32>)) {
                self.panic_at = Some((file.to_string(), n));
            }
            return;
        }
        if let Some((place, what)) = trimmed.split_once(": ")
            && let Some((file, n)) = place.rsplit_once(':')
            && file.ends_with(".py")
            && !file.contains(char::is_whitespace)
            && let Ok(n) = n.parse::<u32>()
            && !what.is_empty()
            && what
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            let message = match self.said.is_empty() {
                true => what.to_string(),
                false => self.said.join("\n"),
            };
            self.said.clear();
            self.push(file.to_string(), n, message);
        }
    }

    fn push(&mut self, file: String, line: u32, message: String) {
        if !self
            .found
            .iter()
            .any(|f| f.file == file && f.line == Some(line))
        {
            self.found.push(Located {
                file,
                line: Some(line),
                col: None,
                message,
            });
        }
    }
}

const KEEP_LINES: usize = 4000;

impl Printer {
    /// Chooses the mode from the environment: progress only when stderr is a terminal
    /// and `CI` is not set; colour only with progress and without `NO_COLOR`.
    pub fn from_env() -> Printer {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = tty && !no_color;
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(color);
        Printer {
            mode: if tty { Mode::Progress } else { Mode::Plain },
            color,
            github: in_github_actions(),
            json: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Registers a value that must never be printed, for every printer of the process (the
    /// one that prints the final error too). A multi-line value is masked line by line,
    /// since output is read and printed by lines. Values (or lines) shorter than
    /// `MIN_SECRET` are not masked: masking `crash` would garble "crashed" and hide nothing
    /// worth hiding; `short_secret` says so before a run.
    pub fn add_secret(&self, value: &str) {
        let mut secrets = SECRETS.lock().unwrap();
        for part in std::iter::once(value)
            .chain(value.lines())
            .map(|l| l.trim_end_matches('\r'))
        {
            if part.len() >= MIN_SECRET && !secrets.iter().any(|s| s == part) {
                secrets.push(part.to_string());
                // The runner masks a value of one line: a multi-line one by each line.
                if self.github && !part.contains('\n') {
                    eprintln!("::add-mask::{}", escape_data(part));
                }
            }
        }
        // Longest first, so a line of a value is not masked before the whole value is.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Replaces every registered secret value in `text` with `***`.
    pub fn mask(&self, text: &str) -> String {
        let secrets = SECRETS.lock().unwrap();
        let mut out = text.to_string();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    fn paint(&self, s: &str, st: Style) -> String {
        if self.color {
            st.apply_to(s).to_string()
        } else {
            s.to_string()
        }
    }

    /// A status line on stderr.
    pub fn status(&self, verb: &str, msg: &str) {
        let verb = self.paint(&format!("{verb:>12}"), Style::new().green().bold());
        eprintln!("{verb} {}", self.mask(msg));
    }

    pub fn warn(&self, msg: &str) {
        let w = self.paint("warning", Style::new().yellow().bold());
        eprintln!("{w}: {}", self.mask(msg));
    }

    /// Prints an error: the whole chain on one line, then the hint if one is known.
    /// Under GitHub Actions each problem is an annotation too, on the file and line it
    /// names.
    pub fn error(&self, err: &anyhow::Error) {
        let e = self.paint("error", Style::new().red().bold());
        eprintln!("{e}: {}", self.mask(&format!("{err:#}")));
        if let Some(hint) = crate::error::hint_of(err) {
            let h = self.paint("hint", Style::new().cyan().bold());
            eprintln!("\n{h}: {}", self.mask(hint));
        }
        if self.github {
            let items = match err.downcast_ref::<crate::error::Many>() {
                Some(many) => many.items.clone(),
                None => vec![(
                    format!("{err:#}"),
                    crate::error::hint_of(err).map(str::to_string),
                )],
            };
            for (message, hint) in items {
                let said = match hint {
                    Some(h) => format!("{message}\nhint: {h}"),
                    None => message.clone(),
                };
                self.annotate("pymdeploy", locate(&message).as_ref(), &said);
            }
        }
    }

    /// An error annotation of the GitHub Actions job, on `at`'s file and line where one is
    /// named (nothing outside Actions).
    pub fn annotate(&self, title: &str, at: Option<&Located>, message: &str) {
        if !self.github {
            return;
        }
        let mut properties = Vec::new();
        if let Some(at) = at {
            properties.push(format!(
                "file={}",
                escape_property(&workspace_path(&at.file))
            ));
            if let Some(n) = at.line {
                properties.push(format!("line={n}"));
            }
            if let Some(c) = at.col {
                properties.push(format!("col={c}"));
            }
        }
        properties.push(format!("title={}", escape_property(title)));
        eprintln!(
            "::error {}::{}",
            properties.join(","),
            escape_data(&self.mask(message))
        );
    }

    /// With `--json`: one JSON event per line on stdout (step started, finished, failed),
    /// while the human progress stays on stderr.
    pub fn set_json(&self, on: bool) {
        self.json.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn json(&self) -> bool {
        self.json.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Emits one event line when `--json` is on.
    pub fn event(&self, event: serde_json::Value) {
        if self.json() {
            self.data(&event.to_string());
        }
    }

    /// Data for the caller: stdout, unmodified but for secret masking.
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.mask(text));
    }

    /// Prints a block of text (container logs, a failed command's output) fenced and
    /// indented, so it reads as quoted material, not as our own words.
    pub fn block(&self, title: &str, lines: &[String]) {
        eprintln!(
            "{}",
            self.paint(&format!("--- {title} ---"), Style::new().dim())
        );
        for l in lines {
            eprintln!("  {}", self.mask(l));
        }
        eprintln!(
            "{}",
            self.paint(&format!("--- end of {title} ---"), Style::new().dim())
        );
    }

    /// Starts showing a step.
    pub fn step(&self, name: &str) -> StepProgress<'_> {
        let bar = match self.mode {
            Mode::Progress => {
                let pb = ProgressBar::new_spinner();
                pb.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.cyan} {prefix:.bold} {elapsed:>4} {wide_msg}",
                    )
                    .expect("static template"),
                );
                pb.set_prefix(name.to_string());
                pb.enable_steady_tick(Duration::from_millis(100));
                Some(pb)
            }
            Mode::Plain => {
                if self.github {
                    eprintln!("::group::{name}");
                } else {
                    eprintln!("==> {name}");
                }
                None
            }
        };
        StepProgress {
            printer: self,
            name: name.to_string(),
            bar,
            lines: Mutex::new(Vec::new()),
            tests: Mutex::new(TestTally::default()),
            failures: Mutex::new(FailureReader::default()),
            started: Instant::now(),
        }
    }

    /// The closing table: each step, its result and its duration, and the total.
    pub fn summary(&self, reports: &[StepReport], total: Duration) {
        if reports.is_empty() {
            return;
        }
        let width = reports
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        eprintln!();
        eprintln!("{}", self.paint("summary", Style::new().bold()));
        for r in reports {
            let (mark, st) = match r.outcome {
                Outcome::Ok => ("ok", Style::new().green()),
                Outcome::Failed => ("FAILED", Style::new().red().bold()),
                Outcome::Skipped => ("skipped", Style::new().dim()),
            };
            let mark = self.paint(&format!("{mark:<7}"), st);
            let dur = if r.outcome == Outcome::Skipped {
                "-".to_string()
            } else {
                fmt_duration(r.duration)
            };
            eprintln!(
                "  {:<width$}  {mark}  {dur:>8}  {}",
                r.name,
                self.mask(&r.note)
            );
        }
        eprintln!(
            "  {:<width$}  {:<7}  {:>8}",
            "total",
            "",
            fmt_duration(total)
        );
    }
}

/// A running step's display.
pub struct StepProgress<'a> {
    printer: &'a Printer,
    name: String,
    bar: Option<ProgressBar>,
    lines: Mutex<Vec<String>>,
    tests: Mutex<TestTally>,
    failures: Mutex<FailureReader>,
    started: Instant,
}

/// Test counts read from a step's output: libtest's `test result:` lines (cargo test)
/// and pytest's closing line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestTally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// How many summary lines were read: 0 means the runner is not one we read, and its
    /// counts are unknown (not zero).
    pub summaries: u64,
}

impl TestTally {
    fn add_line(&mut self, line: &str) {
        if let Some(rest) = line.trim_start().strip_prefix("test result: ") {
            self.add_counts(rest.split(';'));
        } else if let Some(counts) = pytest_summary(line) {
            self.add_counts(counts.split(", "));
        }
    }

    /// Adds the parts of a summary line, each ending in a count and a word (`ok. 3
    /// passed`, `0 failed`, `1 skipped`); parts that do not (`finished in 0.01s`) are passed over.
    fn add_counts<'a>(&mut self, parts: impl Iterator<Item = &'a str>) {
        for part in parts {
            let mut words = part.split_whitespace().rev();
            if let (Some(what), Some(n)) = (words.next(), words.next()) {
                self.add_part(&format!("{n} {what}"));
            }
        }
        self.summaries += 1;
    }

    fn add_part(&mut self, part: &str) {
        let mut words = part.split_whitespace();
        let (Some(Ok(n)), Some(what)) = (words.next().map(str::parse::<u64>), words.next()) else {
            return;
        };
        match what {
            "passed" | "xpassed" => self.passed += n,
            "failed" | "error" | "errors" => self.failed += n,
            "ignored" | "skipped" | "xfailed" | "deselected" => self.ignored += n,
            _ => {}
        }
    }

    /// "3 {what} passed", or "{what} passed" when the runner's counts were not read.
    pub fn passed_note(&self, what: &str) -> String {
        match self.summaries {
            0 => format!("{what} passed"),
            _ => format!("{} {what} passed", self.passed),
        }
    }
}

/// The counts of pytest's closing line, `==== 3 passed, 1 skipped in 0.12s ====` (or,
/// with `-q`, the same without the rules).
fn pytest_summary(line: &str) -> Option<&str> {
    let core = line.trim().trim_matches('=').trim();
    let (counts, time) = core.rsplit_once(" in ")?;
    let time_ok = time.starts_with(|c: char| c.is_ascii_digit())
        && time.split_whitespace().next()?.ends_with('s');
    let counts_ok = counts.split(", ").all(|p| {
        let mut w = p.split_whitespace();
        w.next().is_some_and(|n| n.parse::<u64>().is_ok())
            && w.next().is_some_and(|what| {
                [
                    "passed",
                    "failed",
                    "skipped",
                    "error",
                    "errors",
                    "xfailed",
                    "xpassed",
                    "deselected",
                    "warning",
                    "warnings",
                    "rerun",
                ]
                .contains(&what)
            })
            && w.next().is_none()
    });
    (time_ok && counts_ok).then_some(counts)
}

impl StepProgress<'_> {
    /// One line of the step's output (a build line, a test runner line). Folded into
    /// the spinner on a terminal; printed indented otherwise. Kept either way, so the
    /// whole output can be shown if the step fails.
    pub fn line(&self, text: &str) {
        let text = self.printer.mask(text.trim_end());
        self.tests.lock().unwrap().add_line(&text);
        self.failures.lock().unwrap().add_line(&text);
        match &self.bar {
            Some(pb) => {
                if !text.trim().is_empty() {
                    pb.set_message(text.clone());
                }
            }
            None => {
                if !text.trim().is_empty() {
                    eprintln!("    {text}");
                }
            }
        }
        let mut lines = self.lines.lock().unwrap();
        if lines.len() == KEEP_LINES {
            lines.remove(0);
        }
        lines.push(text);
    }

    /// Whether lines land on a spinner (a terminal) rather than in a log: a caller with
    /// many small updates (bytes sent) sends a log only the ones worth keeping.
    pub fn is_live(&self) -> bool {
        self.bar.is_some()
    }

    /// The last `n` lines of the step's output (masked).
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// The tests counted so far in this step's output.
    pub fn tests(&self) -> TestTally {
        *self.tests.lock().unwrap()
    }

    /// A status message for the step (not part of its captured output).
    pub fn message(&self, text: &str) {
        let text = self.printer.mask(text);
        match &self.bar {
            Some(pb) => pb.set_message(text),
            None => eprintln!("    {text}"),
        }
    }

    /// Ends the display. On failure in progress mode, the folded output is shown in full.
    pub fn finish(self, outcome: &Outcome, note: &str) -> Duration {
        let elapsed = self.started.elapsed();
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
            if *outcome == Outcome::Failed {
                let lines = std::mem::take(&mut *self.lines.lock().unwrap());
                if !lines.is_empty() {
                    self.printer.block(&format!("{} output", self.name), &lines);
                }
            }
        }
        let (mark, st) = match outcome {
            Outcome::Ok => ("ok", Style::new().green().bold()),
            Outcome::Failed => ("failed", Style::new().red().bold()),
            Outcome::Skipped => ("skipped", Style::new().dim()),
        };
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.printer.mask(note))
        };
        eprintln!(
            "{} {} in {}{note}",
            self.printer
                .paint(&format!("{:>12}", self.name), Style::new().bold()),
            self.printer.paint(mark, st),
            fmt_duration(elapsed)
        );
        if self.bar.is_none() && self.printer.github {
            eprintln!("::endgroup::");
        }
        if *outcome == Outcome::Failed {
            let failures = std::mem::take(&mut self.failures.lock().unwrap().found);
            for f in failures {
                self.printer
                    .annotate(&format!("{} failed", self.name), Some(&f), &f.message);
            }
        }
        elapsed
    }

    /// Pauses the spinner while `f` writes to the terminal itself.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(pb) => pb.suspend(f),
            None => f(),
        }
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::{FailureReader, Located, TestTally, escape_data, locate};

    #[test]
    fn a_message_names_its_file_and_line_at_its_start_or_after_its_context() {
        let at = |file: &str, line, col, message: &str| Located {
            file: file.into(),
            line: Some(line),
            col,
            message: message.into(),
        };
        assert_eq!(
            locate("pym-config.yaml:3:1: unknown key `docker_rpeo`"),
            Some(at(
                "pym-config.yaml",
                3,
                Some(1),
                "unknown key `docker_rpeo`"
            ))
        );
        assert_eq!(
            locate("step `stage` failed: pym-config.staging.yaml:2: key `hosts`: bad"),
            Some(at("pym-config.staging.yaml", 2, None, "key `hosts`: bad"))
        );
        assert_eq!(locate("cannot reach http://127.0.0.1:8080: refused"), None);
        assert_eq!(locate("the engine at unix:///run/docker.sock: gone"), None);
        assert_eq!(escape_data("50% a\nb"), "50%25 a%0Ab");
    }

    #[test]
    fn test_failures_are_read_with_their_file_and_line() {
        let mut r = FailureReader::default();
        for l in [
            "    def test_version():",
            ">       assert 1 == 2",
            "E       assert 1 == 2",
            "",
            "testaccept/test_version.py:5: AssertionError",
            "testaccept/conftest.py:9: in fixture",
            "thread 'answers' panicked at testaccept/main.rs:12:5:",
            "assertion `left == right` failed",
            "testaccept/test_version.py:5: AssertionError",
        ] {
            r.add_line(l);
        }
        let found: Vec<(String, Option<u32>, String)> = r
            .found
            .into_iter()
            .map(|f| (f.file, f.line, f.message))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "testaccept/test_version.py".into(),
                    Some(5),
                    "assert 1 == 2".into()
                ),
                (
                    "testaccept/main.rs".into(),
                    Some(12),
                    "assertion `left == right` failed".into()
                ),
            ]
        );
    }

    #[test]
    fn tally_reads_libtest_summaries() {
        let mut t = TestTally::default();
        t.add_line("    test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            TestTally {
                passed: 4,
                failed: 2,
                ignored: 1,
                summaries: 2
            }
        );
    }

    #[test]
    fn secrets_are_masked_by_every_printer_line_by_line_and_short_ones_not_at_all() {
        let first = super::Printer::from_env();
        first.add_secret("first-line-of-it\nsecond-line-of-it");
        first.add_secret("crash");
        let other = super::Printer::from_env();
        assert_eq!(
            other.mask("got first-line-of-it\nsecond-line-of-it!"),
            "got ***!"
        );
        assert_eq!(
            other.mask("  second-line-of-it"),
            "  ***",
            "one line of a value, printed alone"
        );
        assert_eq!(
            other.mask("the container crashed"),
            "the container crashed",
            "a short value masks nothing"
        );
        assert!(
            super::short_secret("crash")
                && super::short_secret("long-enough\nab")
                && !super::short_secret("long-enough")
        );
    }

    #[test]
    fn tally_reads_pytest_summaries() {
        let mut t = TestTally::default();
        t.add_line("..F.s                                                     [100%]");
        t.add_line("FAILED test/test_x.py::test_y - assert 1 == 2");
        t.add_line("1 failed, 3 passed, 1 skipped in 0.12s");
        t.add_line("============ 2 passed, 1 warning in 1.02s (0:00:01) ============");
        t.add_line("the service passed in 3s"); // not a summary: words that are not counts
        assert_eq!(
            t,
            TestTally {
                passed: 5,
                failed: 1,
                ignored: 1,
                summaries: 2
            }
        );
        assert_eq!(t.passed_note("tests"), "5 tests passed");
    }

    #[test]
    fn unknown_runners_have_no_count() {
        let mut t = TestTally::default();
        t.add_line("All tests OK");
        assert_eq!(
            t.passed_note("tests"),
            "tests passed",
            "not \"0 tests passed\": the count is unknown"
        );
    }
}
