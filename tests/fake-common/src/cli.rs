//! The command lines of the fakes' binaries: `--flag VALUE` options and switches, and the
//! usage line when one is wrong.

use std::str::FromStr;

/// The arguments of a binary, read one at a time: options are its items, their values
/// are read with `value` and `parse`.
pub struct Args {
    args: std::iter::Skip<std::env::Args>,
    /// What `usage:` says: the binary's name and its options.
    usage: &'static str,
}

impl Args {
    pub fn new(usage: &'static str) -> Args {
        Args {
            args: std::env::args().skip(1),
            usage,
        }
    }

    /// The value of option `name` (the next argument).
    pub fn value(&mut self, name: &str) -> String {
        self.args
            .next()
            .unwrap_or_else(|| self.usage(&format!("{name} needs a value")))
    }

    /// The value of option `name`, read as `what` (`a port number`, `seconds`).
    pub fn parse<T: FromStr>(&mut self, name: &str, what: &str) -> T {
        self.value(name)
            .parse()
            .unwrap_or_else(|_| self.usage(&format!("{name} takes {what}")))
    }

    /// Says what is wrong, if anything, and the usage, then exits: 0 when nothing is wrong
    /// (`--help`), else 2.
    pub fn usage(&self, problem: &str) -> ! {
        if !problem.is_empty() {
            eprintln!("error: {problem}");
        }
        eprintln!("usage: {}", self.usage);
        std::process::exit(if problem.is_empty() { 0 } else { 2 })
    }
}

impl Iterator for Args {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.args.next()
    }
}
