//! The build context: what `docker build` would send, streamed from disk.
//!
//! Docker's `.dockerignore` is not gitignore. This module follows moby's patternmatcher
//! (`New`, `Pattern.compile`, `MatchesUsingParentResults`, `MatchesOrParentMatches`), the
//! ignorefile reader, the docker CLI's rule that the Dockerfile and `.dockerignore` are
//! always sent, and the archive walk that descends into an excluded directory only when an
//! exclusion (`!`) pattern could re-include something below it. The test
//! `dockerignore_matches_docker_cli` compares our context with the docker CLI's on the
//! same tree.
//!
//! The tar stream is written by a blocking thread into a small bounded channel that the
//! HTTP body reads from, so memory stays flat whatever the size of the files sent.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

// ---------------------------------------------------------------------------------------
// Patterns

#[derive(Clone, Debug, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Tokens(Vec<Tok>),
}

/// A compiled pattern element, standing for one piece of moby's generated regexp.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: `[^/]*`
    Star,
    /// `?`: `[^/]`
    One,
    /// `[...]`: a character class
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
    /// `**` followed by more pattern: `(.*/)?`
    AnyDirs,
    /// a trailing `**` after other wildcards: `.*`
    AnyRest,
}

#[derive(Clone, Debug)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchType,
}

/// A `.dockerignore`, compiled.
#[derive(Clone, Debug, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Ignore {
    /// Compiles patterns as moby's `patternmatcher.New` does.
    pub fn new<S: AsRef<str>>(lines: &[S]) -> Result<Ignore> {
        let mut out = Ignore::default();
        for p in lines {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    bail!("illegal exclusion pattern: \"!\"");
                }
                exclusion = true;
                p = rest.to_string();
                out.exclusions = true;
            }
            let kind = compile(&p).with_context(|| format!("bad pattern `{p}`"))?;
            out.patterns.push(Pattern {
                cleaned: p,
                exclusion,
                kind,
            });
        }
        Ok(out)
    }

    /// `MatchesOrParentMatches`: does `file` (slash-separated, relative) match?
    pub fn matches_or_parent(&self, file: &str) -> bool {
        let file = clean(file);
        if file == "." {
            return false;
        }
        let parent = dir(&file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&file);
            if !m && parent != "." {
                for i in 0..parent_dirs.len() {
                    if p.matches(&parent_dirs[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// `MatchesUsingParentResults`: the walk's incremental form. `parent` is the result
    /// vector of the enclosing directory, or `None` at the top.
    fn matches_with_parent(&self, file: &str, parent: Option<&[bool]>) -> (bool, Vec<bool>) {
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent.is_some_and(|pm| pm[i]);
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(file);
                if !m && parent.is_none() {
                    let parent_path = dir(file);
                    if parent_path != "." {
                        let dirs: Vec<&str> = parent_path.split('/').collect();
                        m = (0..dirs.len()).any(|k| p.matches(&dirs[..=k].join("/")));
                    }
                }
            }
            info[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchType::Exact => path == self.cleaned,
            MatchType::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchType::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            MatchType::Tokens(toks) => {
                let chars: Vec<char> = path.chars().collect();
                match_toks(toks, &chars)
            }
        }
    }
}

/// moby's `Pattern.compile`, producing tokens instead of a regexp string. The match type
/// is decided exactly as there: the last wildcard seen wins, and a leading `**` makes a
/// suffix match unless a later wildcard turns it into a regexp.
fn compile(pattern: &str) -> Result<MatchType> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Re,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut iteration = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        toks.push(Tok::AnyRest);
                        kind = Kind::Re;
                    }
                } else {
                    toks.push(Tok::AnyDirs);
                    kind = Kind::Re;
                }
                if iteration == 0 {
                    kind = Kind::Suffix;
                }
            } else {
                toks.push(Tok::Star);
                kind = Kind::Re;
            }
        } else if ch == '?' {
            toks.push(Tok::One);
            kind = Kind::Re;
        } else if ch == '\\' {
            if i < chars.len() {
                toks.push(Tok::Lit(chars[i]));
                i += 1;
                kind = Kind::Re;
            } else {
                bail!("trailing backslash");
            }
        } else if ch == '[' {
            let (tok, next) = parse_class(&chars, i)?;
            toks.push(tok);
            i = next;
            kind = Kind::Re;
        } else if ch == ']' {
            toks.push(Tok::Lit(']'));
            kind = Kind::Re;
        } else {
            toks.push(Tok::Lit(ch));
        }
        iteration += 1;
    }
    Ok(match kind {
        Kind::Exact => MatchType::Exact,
        Kind::Prefix => MatchType::Prefix,
        Kind::Suffix => MatchType::Suffix,
        Kind::Re => MatchType::Tokens(toks),
    })
}

/// Parses a class after its `[`; returns the token and the index after `]`.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Tok, usize)> {
    let mut negated = false;
    if chars.get(i) == Some(&'^') {
        negated = true;
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            bail!("unterminated character class")
        };
        i += 1;
        if c == ']' && !first {
            break;
        }
        if c == ']' && first {
            // filepath.Match rejects an empty class
            bail!("empty character class");
        }
        first = false;
        let lo = if c == '\\' {
            let Some(&e) = chars.get(i) else {
                bail!("unterminated character class")
            };
            i += 1;
            e
        } else {
            c
        };
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            let mut h = chars[i];
            i += 1;
            if h == '\\' {
                let Some(&e) = chars.get(i) else {
                    bail!("unterminated character class")
                };
                i += 1;
                h = e;
            }
            if h < lo {
                bail!("bad character range {lo}-{h}");
            }
            hi = h;
        }
        items.push((lo, hi));
    }
    Ok((Tok::Class { negated, items }, i))
}

/// Matches the whole of `s` against `toks` (anchored like `^...$`), backtracking.
fn match_toks(toks: &[Tok], s: &[char]) -> bool {
    let Some((first, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match first {
        Tok::Lit(c) => s.first() == Some(c) && match_toks(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|c| *c != '/') && match_toks(rest, &s[1..]),
        Tok::Class { negated, items } => {
            s.first()
                .is_some_and(|c| items.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && match_toks(rest, &s[1..])
        }
        Tok::Star => {
            let mut k = 0;
            loop {
                if match_toks(rest, &s[k..]) {
                    return true;
                }
                if k == s.len() || s[k] == '/' {
                    return false;
                }
                k += 1;
            }
        }
        Tok::AnyDirs => {
            if match_toks(rest, s) {
                return true;
            }
            (0..s.len()).any(|k| s[k] == '/' && match_toks(rest, &s[k + 1..]))
        }
        Tok::AnyRest => (0..=s.len()).any(|k| match_toks(rest, &s[k..])),
    }
}

/// Go's `filepath.Clean` for slash-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..i]),
        None => ".".into(),
    }
}

/// Reads `.dockerignore` as moby's ignorefile reader does: `#` comments only at the
/// start of a line, whitespace trimmed, paths cleaned, a leading `/` dropped.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = if n == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim().to_string();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim().to_string();
        }
        if !p.is_empty() {
            p = clean(&p);
            if p.len() > 1 && p.starts_with('/') {
                p = p[1..].to_string();
            }
        }
        if invert {
            p = format!("!{p}");
        }
        out.push(p);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The walk

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// Slash-separated path relative to the context root.
    pub rel: String,
    pub kind: EntryKind,
    pub size: u64,
}

/// Lists what Docker would send for `root` with `dockerfile` (relative to root).
pub fn list(root: &Path, dockerfile: &str) -> Result<Vec<Entry>> {
    let ignore_path = root.join(".dockerignore");
    let mut patterns = match fs::read_to_string(&ignore_path) {
        Ok(text) => parse_dockerignore(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", ignore_path.display())),
    };
    // The docker CLI's TrimBuildFilesFromExcludes: the daemon needs these two.
    let probe = Ignore::new(&patterns).with_context(|| format!("in {}", ignore_path.display()))?;
    if probe.matches_or_parent(".dockerignore") {
        patterns.push("!.dockerignore".into());
    }
    let dockerfile = dockerfile.replace('\\', "/");
    if probe.matches_or_parent(&dockerfile) {
        patterns.push(format!("!{dockerfile}"));
    }
    let ignore = Ignore::new(&patterns)?;
    let mut out = Vec::new();
    walk(root, root, &ignore, None, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    dir_path: &Path,
    ignore: &Ignore,
    parent: Option<&[bool]>,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir_path)
        .with_context(|| format!("cannot read directory {}", dir_path.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot read directory {}", dir_path.display()))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let rel = rel_slash(root, &path)?;
        let ft = child
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        let (skip, info) = ignore.matches_with_parent(&rel, parent);
        if skip {
            if !ft.is_dir() || !ignore.exclusions {
                continue;
            }
            let dir_slash = format!("{rel}/");
            let may_reinclude = ignore
                .patterns
                .iter()
                .any(|p| p.exclusion && format!("{}/", p.cleaned).starts_with(&dir_slash));
            if may_reinclude {
                walk(root, &path, ignore, Some(&info), out)?;
            }
            continue;
        }
        if ft.is_dir() {
            out.push(Entry {
                rel: rel.clone(),
                kind: EntryKind::Dir,
                size: 0,
            });
            walk(root, &path, ignore, Some(&info), out)?;
        } else if ft.is_symlink() {
            out.push(Entry {
                rel,
                kind: EntryKind::Symlink,
                size: 0,
            });
        } else if ft.is_file() {
            let size = child.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(Entry {
                rel,
                kind: EntryKind::File,
                size,
            });
        }
        // sockets, fifos and devices are not sent
    }
    Ok(())
}

fn rel_slash(root: &Path, path: &Path) -> Result<String> {
    let rel = path
        .strip_prefix(root)
        .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
    let s = rel
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    Ok(s.replace('\\', "/"))
}

// ---------------------------------------------------------------------------------------
// The tar stream

/// Bytes written so far, readable while the stream runs.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 8;

/// Streams `entries` of `root` as a tar archive. Memory is bounded by
/// `CHUNK * (CHANNEL_DEPTH + 2)` whatever the size of the files.
pub fn tar_stream(
    root: PathBuf,
    entries: Vec<Entry>,
) -> (
    impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    Counter,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let counter = Counter::default();
    let written = counter.0.clone();
    std::thread::spawn(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            written,
        };
        if let Err(e) = write_tar(&root, &entries, writer) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (stream, counter)
}

fn write_tar(root: &Path, entries: &[Entry], writer: ChannelWriter) -> io::Result<()> {
    let mut tar = tar::Builder::new(writer);
    tar.follow_symlinks(false);
    for e in entries {
        let path = root.join(&e.rel);
        let meta = fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        {
            use std::os::unix::fs::MetadataExt;
            header.set_mode(meta.mode() & 0o7777);
            header.set_mtime(meta.mtime().max(0) as u64);
        }
        header.set_uid(0);
        header.set_gid(0);
        match e.kind {
            EntryKind::Dir => {
                header.set_size(0);
                tar.append_data(&mut header, format!("{}/", e.rel), io::empty())?;
            }
            EntryKind::Symlink => {
                let target = fs::read_link(&path)?;
                header.set_size(0);
                tar.append_link(&mut header, &e.rel, target)?;
            }
            EntryKind::File => {
                let file = fs::File::open(&path)?;
                header.set_size(meta.len());
                tar.append_data(&mut header, &e.rel, file)?;
            }
        }
    }
    let mut w = tar.into_inner()?;
    w.flush_final()
}

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    written: Arc<AtomicU64>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.written
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the Docker engine stopped reading the build context",
            )
        })
    }

    fn flush_final(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str], path: &str) -> bool {
        Ignore::new(patterns).unwrap().matches_or_parent(path)
    }

    #[test]
    fn moby_patternmatcher_cases() {
        // Cases from moby's patternmatcher tests (TestMatches / TestMatchesOrParentMatches).
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**/file", "file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.xyz", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "file.txt", true),
            ("**/**/*.txt", "dir/file.txt", true),
            ("**/*.txt", "abc.txt", true),
            ("**/*.txt", "abc/def.txt", true),
            ("**.txt", "file.txt", true),
            ("**.txt", "dir/file.txt", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**/", "dir/file", true),
            ("dir/**/file", "dir/file", true),
            ("dir/**/file", "dir/dir2/file", true),
            ("dir/**/file", "dir/dir2/dir3/file", true),
            ("dir/**/file", "dirfile", false),
            ("**/dir/**", "dir/file", true),
            ("**/dir/**", "dir/dir2/file", true),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aze", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abc/def", false),
            ("a\\*b", "a*b", true),
            ("a\\", "a", false),
            ("a\\\\", "a\\", true),
            ("*", "dir/file", true), // parent matches
            ("dir/*", "dir/sub/file", true),
            ("pkg/**/*.go", "pkg/a/b/c.go", true),
            ("foo", "foo/bar", true),
            ("foo", "foobar", false),
            ("/foo", "foo", false), // cleaned but not stripped by New; the reader strips it
        ];
        for (pattern, path, want) in cases {
            let got = match Ignore::new(&[*pattern]) {
                Ok(i) => i.matches_or_parent(path),
                Err(_) => false,
            };
            assert_eq!(got, *want, "pattern {pattern:?} path {path:?}");
        }
    }

    #[test]
    fn exclusions_reinclude_in_order() {
        let p = ["*.md", "!README.md", "README-secret.md"];
        assert!(m(&p, "CHANGELOG.md"));
        assert!(!m(&p, "README.md"));
        assert!(m(&p, "README-secret.md"));
        assert!(!m(&["target", "!target/keep"], "target/keep"));
        assert!(m(&["target", "!target/keep"], "target/other"));
    }

    #[test]
    fn reader_follows_ignorefile() {
        let text =
            "\u{feff}# comment\n  target/  \n/abs\n! keep \n\n  # not a comment\nfoo/../bar\n";
        assert_eq!(
            parse_dockerignore(text),
            vec!["target", "abs", "!keep", "# not a comment", "bar"]
        );
    }

    #[test]
    fn clean_is_go_clean() {
        for (a, b) in [
            ("a//b/./c/..", "a/b"),
            ("./", "."),
            ("../x", "../x"),
            ("/../a", "/a"),
            ("a/", "a"),
            ("", "."),
        ] {
            assert_eq!(clean(a), b, "{a}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Ignore::new(&["!"]).is_err());
        assert!(Ignore::new(&["a[b"]).is_err());
    }
}
