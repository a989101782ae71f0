//! The agent's Debian packages and release tarballs (`scripts/packages.sh`, `make packages`),
//! built once for this binary at revisions 1 and 2, and installed only into throwaway roots
//! (`dpkg --root`, never onto this machine):
//!
//! - amd64: the files, the conffile, `systemd-analyze verify` on the installed units; the path
//!   unit enabled and not the service; an upgrade to revision 2 keeps an edited configuration and
//!   the state; `remove` keeps both, `purge` removes both.
//! - arm64: the package's files, and its binary runs under qemu.
//! - The tarballs hold the same files, and SHA256SUMS checks.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tally_testkit::skip;

/// The artifacts of both revisions, built once: (revision 1's directory, revision 2's).
fn built() -> Result<&'static (PathBuf, PathBuf), String> {
    static BUILT: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !rustix::process::geteuid().is_root() {
                return Err("dpkg --root installs files owned by root: run as root".into());
            }
            if Command::new("qemu-aarch64").arg("--version").output().is_err() {
                return Err("qemu-user is not installed (apt-get install qemu-user)".into());
            }
            let keep = tempfile::tempdir().unwrap().keep();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/packages.sh");
            let mut dirs = Vec::new();
            for revision in ["1", "2"] {
                let out = Command::new(&script).env("PACKAGE_REVISION", revision).output().unwrap();
                assert!(out.status.success(), "packages.sh: {}", String::from_utf8_lossy(&out.stderr));
                let listed = String::from_utf8(out.stdout).unwrap();
                let sums = Path::new(listed.lines().last().unwrap());
                let dir = keep.join(revision);
                std::fs::create_dir_all(&dir).unwrap();
                for entry in std::fs::read_dir(sums.parent().unwrap()).unwrap() {
                    let path = entry.unwrap().path();
                    std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
                }
                dirs.push(dir);
            }
            Ok((dirs[0].clone(), dirs[1].clone()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one file of `dir` whose name ends with `suffix`.
fn artifact(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "{suffix} in {}: {found:?}", dir.display());
    found[0].clone()
}

/// An empty root that dpkg can install into: its database, and the directories the maintainer
/// scripts write (they run outside the root with DPKG_ROOT set: the root has no shell).
fn throwaway_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc/systemd/system", "var/lib/systemd"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::write(root.path().join("var/lib/dpkg/status"), "").unwrap();
    root
}

fn dpkg(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends", "--force-confold", "--log=/dev/null"])
        .args(args);
    cmd
}

const FILES: [&str; 6] = [
    "./usr/bin/tally-agent",
    "./lib/systemd/system/tally-agent.service",
    "./lib/systemd/system/tally-agent.path",
    "./usr/lib/modules-load.d/tally-agent.conf",
    "./etc/tally-agent/agent.toml",
    "./usr/share/doc/tally-agent/copyright",
];

#[test]
fn the_amd64_package_installs_upgrades_keeps_and_purges() {
    let (first, second) = match built() {
        Ok(dirs) => dirs,
        Err(why) => return skip!(&why),
    };
    let deb = artifact(first, "_amd64.deb");
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for file in FILES {
        assert!(contents.lines().any(|l| l.ends_with(file)), "{file} not in:\n{contents}");
    }
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    let version = env!("CARGO_PKG_VERSION");
    assert!(info.contains("Architecture: amd64") && info.contains(&format!("Version: {version}-1")), "{info}");

    let root = throwaway_root();
    let r = root.path();
    ok(dpkg(r, &["--install"]).arg(&deb));
    for file in FILES {
        assert!(r.join(file).exists(), "{file} not installed");
    }
    let installed = std::fs::read(r.join("usr/bin/tally-agent")).unwrap();
    assert!(!installed.windows(8).any(|w| w == b".symtab\0"), "the amd64 binary is not stripped");
    let conffiles = std::fs::read_to_string(r.join("var/lib/dpkg/info/tally-agent.conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/tally-agent/agent.toml");
    // Enabled: the path unit, which starts the service once the socket is enrolled; not the
    // service, which would start unenrolled.
    // (The links name the units' paths inside the root, which do not exist outside it.)
    let wanted = r.join("etc/systemd/system/paths.target.wants/tally-agent.path");
    assert_eq!(std::fs::read_link(&wanted).unwrap(), Path::new("/lib/systemd/system/tally-agent.path"));
    assert!(
        std::fs::symlink_metadata(r.join("etc/systemd/system/multi-user.target.wants/tally-agent.service")).is_err()
    );
    let default = ok(Command::new(r.join("usr/bin/tally-agent")).arg("default-config"));
    assert_eq!(std::fs::read_to_string(r.join("etc/tally-agent/agent.toml")).unwrap(), default);
    // The installed units verify, the service with the installed binary.
    let units = r.join("lib/systemd/system");
    let service = std::fs::read_to_string(units.join("tally-agent.service")).unwrap();
    let check = tempfile::tempdir().unwrap();
    let binary = r.join("usr/bin/tally-agent").display().to_string();
    std::fs::write(check.path().join("tally-agent.service"), service.replace("/usr/bin/tally-agent", &binary)).unwrap();
    std::fs::copy(units.join("tally-agent.path"), check.path().join("tally-agent.path")).unwrap();
    ok(Command::new("systemd-analyze")
        .arg("verify")
        .arg(check.path().join("tally-agent.path"))
        .arg(check.path().join("tally-agent.service")));

    // The operator edits the configuration; the socket is enrolled and holds buckets.
    let config = r.join("etc/tally-agent/agent.toml");
    let edited = format!("{default}\nwan = [\"eth1\"]\n").replace("wan = []\n", "");
    std::fs::write(&config, &edited).unwrap();
    let state = r.join("var/lib/tally-agent/identity");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("collector"), "collector.example:4433\n").unwrap();

    // Upgrade: the new binary, the edited configuration and the state kept.
    ok(dpkg(r, &["--install"]).arg(artifact(second, "_amd64.deb")));
    let status = ok(&mut dpkg(r, &["--status", "tally-agent"]));
    let upgraded = format!("Version: {}-2", env!("CARGO_PKG_VERSION"));
    assert!(status.contains(&upgraded) && status.contains("Status: install ok installed"), "{status}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(state.join("collector").exists());

    // Remove keeps the configuration and the state; purge removes them.
    ok(&mut dpkg(r, &["--remove", "tally-agent"]));
    assert!(!r.join("usr/bin/tally-agent").exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(state.join("collector").exists());
    ok(&mut dpkg(r, &["--purge", "tally-agent"]));
    assert!(!config.exists() && !r.join("var/lib/tally-agent").exists());
    assert!(std::fs::symlink_metadata(&wanted).is_err(), "purge disables the path unit");
}

#[test]
fn the_arm64_package_runs_under_qemu_and_the_release_files_check() {
    let (first, _) = match built() {
        Ok(dirs) => dirs,
        Err(why) => return skip!(&why),
    };
    let deb = artifact(first, "_arm64.deb");
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(info.contains("Architecture: arm64"), "{info}");
    let unpacked = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(unpacked.path()));
    for file in FILES {
        assert!(unpacked.path().join(file).exists(), "{file} not in the arm64 package");
    }
    let binary = unpacked.path().join("usr/bin/tally-agent");
    // An ELF for aarch64 (e_machine 183), which qemu runs without any aarch64 library: static;
    // stripped (no symbol table among its sections' names).
    let elf = std::fs::read(&binary).unwrap();
    assert_eq!((&elf[..4], u16::from_le_bytes([elf[18], elf[19]])), (&b"\x7fELF"[..], 183));
    assert!(!elf.windows(8).any(|w| w == b".symtab\0"), "the arm64 binary is not stripped");
    let version = ok(Command::new("qemu-aarch64").arg(&binary).arg("--version"));
    assert!(version.starts_with(&format!("tally-agent {}", env!("CARGO_PKG_VERSION"))), "{version}");

    // Each tarball holds the package's files; SHA256SUMS checks every artifact.
    for arch in ["amd64", "arm64"] {
        let listing = ok(Command::new("tar").arg("-tzf").arg(artifact(first, &format!("-{arch}.tar.gz"))));
        for file in FILES {
            assert!(
                listing.lines().any(|l| format!("./{l}") == file || l == &file[2..]),
                "{file} not in {arch}'s tarball"
            );
        }
    }
    let sums = ok(Command::new("sha256sum").arg("--check").arg("SHA256SUMS").current_dir(first));
    assert_eq!(sums.lines().filter(|l| l.ends_with(": OK")).count(), 4, "{sums}");
}
