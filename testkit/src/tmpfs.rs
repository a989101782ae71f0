//! A small tmpfs for full-disk tests: mounted on a temporary directory, unmounted when dropped.
//! Needs root (CI runs as root); elsewhere `mount` fails and the test says why and skips.

use std::path::Path;
use std::process::Command;

#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB, or says why it could not.
    pub fn mount(kib: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system but for about `leave_kib` KiB with a file `ballast`, removed by
    /// [`Tmpfs::free`] to give the space back.
    pub fn fill(&self, leave_kib: u64) {
        let free = self.free_kib();
        let size = free.saturating_sub(leave_kib) * 1024;
        std::fs::write(self.path().join("ballast"), vec![0xa5u8; size as usize]).unwrap();
    }

    pub fn free(&self) {
        std::fs::remove_file(self.path().join("ballast")).unwrap();
    }

    /// Remounts the file system read-only (as after an error, or a read-only mount by mistake).
    pub fn remount_read_only(&self) {
        let status = Command::new("mount").args(["-o", "remount,ro"]).arg(self.path()).status().unwrap();
        assert!(status.success(), "remounting {} read-only", self.path().display());
    }

    /// Free space, in KiB, as `df` reports it.
    pub fn free_kib(&self) -> u64 {
        let out = Command::new("df").args(["--output=avail", "-k"]).arg(self.path()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df said {text:?}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
