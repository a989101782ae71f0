//! Shared by the collector's tests: the real binary on a data directory of its own.
#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Output};

/// A collector data directory and configuration, driven through the real binary.
pub struct Collector {
    pub dir: tempfile::TempDir,
}

impl Collector {
    pub fn new() -> Self {
        Collector::with_config("")
    }

    /// With `extra` configuration lines.
    pub fn with_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("data_dir = {:?}\n{extra}\n", dir.path().join("data"));
        std::fs::write(dir.path().join("c.toml"), config).unwrap();
        Collector { dir }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tally-collector"))
            .arg("--config")
            .arg(self.dir.path().join("c.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// A command line of words without spaces.
pub fn args(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}
