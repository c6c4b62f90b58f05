//! What the host sees of a process's life: the PID file (written once ready, removed at
//! exit unless a newer process has written its own), systemd's notifications (`READY=1`,
//! `MAINPID`) and socket activation (`LISTEN_FDS`), and `tierlb --upgrade`, which signals the
//! process a PID file names and waits for the new process's PID to replace it.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes this process's ID to `path` atomically.
pub fn write(path: &Path) -> io::Result<()> {
    write_atomically(path, format!("{}\n", std::process::id()).as_bytes())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed over
/// it, so a reader (or a restart after a crash) sees the old content or the new, never part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(name);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// The process ID `path` holds.
pub fn read(path: &Path) -> io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold a process ID", path.display()),
        )
    })
}

/// Removes `path` if it still holds this process's ID.
pub fn remove_own(path: &Path) {
    if read(path).ok() == Some(std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Tells systemd (when it started this process with `NOTIFY_SOCKET`) that it is ready, and,
/// after an upgrade, that it is now the main process (the unit needs `NotifyAccess=all`).
pub fn notify_ready(upgraded: bool) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut states = vec![sd_notify::NotifyState::Ready];
    if upgraded {
        states.push(sd_notify::NotifyState::MainPid(std::process::id()));
    }
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The sockets systemd's socket activation passed (`LISTEN_FDS`, with `LISTEN_FDNAMES`):
/// TCP listeners and UDP sockets, each with its name.
pub fn activation() -> Vec<(OwnedFd, String)> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("fd {}", i + 3));
        let fd = match fds.take_tcp_listener(i) {
            Ok(Some(listener)) => Some(OwnedFd::from(listener)),
            _ => match fds.take_udp_socket(i) {
                Ok(Some(socket)) => Some(OwnedFd::from(socket)),
                _ => None,
            },
        };
        match fd {
            Some(fd) => out.push((fd, name)),
            None => {
                tracing::warn!(socket = %name, "socket activation: not a TCP listener nor a UDP socket: left alone")
            }
        }
    }
    if !out.is_empty() {
        tracing::info!(
            sockets = out.len(),
            "socket activation: took the sockets systemd passed"
        );
    }
    out
}

/// Asks the process named by `pid_file` to upgrade (SIGUSR2) and waits up to `within` for a
/// new process ID there. Returns the old and the new ID. The old process writes its own ID
/// again when the upgrade fails: that ends the wait at once.
pub fn request(pid_file: &Path, within: Duration) -> Result<(u32, u32), String> {
    let old = read(pid_file).map_err(|e| format!("cannot read {}: {e}", pid_file.display()))?;
    let written = || std::fs::metadata(pid_file).and_then(|m| m.modified()).ok();
    let before = written();
    let pid = i32::try_from(old)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("{} holds no valid process ID", pid_file.display()))?;
    rustix::process::kill_process(pid, rustix::process::Signal::USR2)
        .map_err(|e| format!("cannot signal process {old}: {e}"))?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match read(pid_file) {
            Ok(new) if new != old => return Ok((old, new)),
            Ok(_) if written() != before => {
                return Err(format!(
                    "the upgrade failed; process {old} keeps serving and its log says why"
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Err(format!(
        "no new process replaced {old} within {}s; the log of process {old} says why",
        within.as_secs()
    ))
}
