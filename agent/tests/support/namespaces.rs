//! Two network namespaces joined by a veth pair (`vA` 192.0.2.1 in `a`, `vB` 192.0.2.2 in `b`),
//! removed on drop. Needs root; [`Namespaces::create`] says why when it cannot.

use std::process::Command;

pub struct Namespaces {
    pub a: String,
    pub b: String,
}

impl Namespaces {
    /// `Err` says why the test that wanted them is skipped.
    pub fn create(tag: &str) -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("creating network namespaces needs root".into());
        }
        let id = std::process::id();
        let ns = Namespaces { a: format!("tally-{tag}{id}-a"), b: format!("tally-{tag}{id}-b") };
        let steps: [&[&str]; 9] = [
            &["netns", "add", &ns.a],
            &["netns", "add", &ns.b],
            &["link", "add", "vA", "netns", &ns.a, "type", "veth", "peer", "name", "vB", "netns", &ns.b],
            &["-n", &ns.a, "addr", "add", "192.0.2.1/24", "dev", "vA"],
            &["-n", &ns.b, "addr", "add", "192.0.2.2/24", "dev", "vB"],
            &["-n", &ns.a, "link", "set", "vA", "up"],
            &["-n", &ns.b, "link", "set", "vB", "up"],
            &["-n", &ns.a, "link", "set", "lo", "up"],
            &["-n", &ns.b, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let out = Command::new("ip").args(step).output().map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!("ip {}: {}", step.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Ok(ns)
    }

    /// `program` run inside namespace `ns`.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
