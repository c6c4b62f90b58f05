//! Processes a test does not start itself: the one an upgrade leaves serving, found by its
//! PID file, and whether a process has exited.

/// The process ID in the PID file `path`, once there.
pub fn pid_in(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped).
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Kills whatever process a PID file names when the test ends, however it ends: after an
/// upgrade the serving process is no child of the test.
pub struct KillNamed(pub std::path::PathBuf);

impl Drop for KillNamed {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.0) {
            if let Ok(pid) = i32::try_from(pid) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
