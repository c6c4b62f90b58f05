//! Binary upgrades without a lost client, and the sockets a process starts with (DESIGN §14).
//!
//! Every listening socket (each service's, the admin endpoint's, the gossip socket) is
//! registered here while it is open ([`hold`]). On SIGUSR2 the process starts the binary at
//! its own path with its own arguments and hands it those sockets over a Unix socket
//! ([`wire`]); the new process takes them by role and configured address instead of binding
//! ([`take_tcp`], [`take_udp`]), starts, and says it is ready ([`ready`]); only then does the
//! old one stop accepting and drain. Both hold the same sockets meanwhile, so the kernel's
//! accept queue is never closed: no client is refused or reset. A new process that exits or
//! is not ready within 30 s is stopped, and the old one serves on.
//!
//! A process started by systemd socket activation (`LISTEN_FDS`) takes its sockets the same
//! way, matched by their own address.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::net;

pub mod host;
mod wire;

/// The variable that tells a new process where to fetch its sockets.
pub const VAR: &str = "TIERLB_UPGRADE";
/// How long a new process has to start and be ready.
pub const READY_WITHIN: Duration = Duration::from_secs(30);
/// How often the old process looks at the new one while it waits.
const LOOK: Duration = Duration::from_millis(100);

/// What a listening socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A service's listener (or one shared by `sni`).
    Service,
    /// The admin endpoint's listener.
    Admin,
    /// The cluster's gossip socket (UDP).
    Gossip,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Admin => "admin",
            Role::Gossip => "gossip",
        }
    }
}

/// How this process was started, for the one it starts on an upgrade.
#[derive(Debug, Clone)]
pub struct Options {
    /// The binary's path, as it was at start (an upgrade runs what is at that path now).
    pub exe: PathBuf,
    /// The arguments, without the program name.
    pub args: Vec<std::ffi::OsString>,
    /// Where the process ID is written once ready, if anywhere.
    pub pid_file: Option<PathBuf>,
}

/// A socket handed to this process at start: by an upgrade (with its role and configured
/// address) or by systemd (neither).
struct Inherited {
    role: Option<Role>,
    configured: String,
    fd: OwnedFd,
}

/// A socket open here, for a handover.
struct Open {
    id: u64,
    role: Role,
    configured: SocketAddr,
    fd: OwnedFd,
}

static OPTIONS: OnceLock<Options> = OnceLock::new();
static OPEN: Mutex<Vec<Open>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);
static INHERITED: Mutex<Vec<Inherited>> = Mutex::new(Vec::new());
/// The new process's line to the old one, until it says it is ready.
static HANDOVER: Mutex<Option<OwnedFd>> = Mutex::new(None);
static UPGRADING: AtomicBool = AtomicBool::new(false);
static HANDED_OVER: AtomicBool = AtomicBool::new(false);
static UPGRADED: AtomicBool = AtomicBool::new(false);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records how this process was started; takes the sockets an old process or systemd hands
/// it. Called once, before serving. Fails when an old process's handover fails.
pub fn at_start(options: Options) -> Result<(), String> {
    let _ = OPTIONS.set(options);
    if let Some(name) = std::env::var_os(VAR) {
        let name = name.to_string_lossy().into_owned();
        let conn = wire::connect(&name, READY_WITHIN)
            .map_err(|e| format!("cannot reach the old process ({name}): {e}"))?;
        let entries = wire::receive(&conn)
            .map_err(|e| format!("cannot take the old process's sockets: {e}"))?;
        let mut inherited = lock(&INHERITED);
        for entry in entries {
            let Some(role) = [Role::Service, Role::Admin, Role::Gossip]
                .into_iter()
                .find(|r| r.word() == entry.role)
            else {
                tracing::warn!(role = %entry.role, "upgrade: a socket of an unknown role: closed");
                continue;
            };
            inherited.push(Inherited {
                role: Some(role),
                configured: entry.configured,
                fd: entry.fd,
            });
        }
        tracing::info!(
            sockets = inherited.len(),
            "upgrade: took the old process's sockets"
        );
        *lock(&HANDOVER) = Some(conn);
        UPGRADED.store(true, Ordering::Relaxed);
    }
    for (fd, name) in host::activation() {
        lock(&INHERITED).push(Inherited {
            role: None,
            configured: name,
            fd,
        });
    }
    Ok(())
}

/// The inherited socket for `role` at `configured`, if one was handed over: an upgrade's by
/// role and configured address, systemd's by its own address.
fn take(role: Role, configured: SocketAddr, stream: bool) -> Option<OwnedFd> {
    let mut inherited = lock(&INHERITED);
    let wanted = configured.to_string();
    let at = inherited
        .iter()
        .position(|s| s.role == Some(role) && s.configured == wanted)
        .or_else(|| {
            inherited.iter().position(|s| {
                let socket = socket2::SockRef::from(&s.fd);
                s.role.is_none()
                    && socket.r#type().ok()
                        == Some(if stream {
                            socket2::Type::STREAM
                        } else {
                            socket2::Type::DGRAM
                        })
                    && socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(configured)
            })
        })?;
    Some(inherited.remove(at).fd)
}

/// A listening TCP socket for `role` at `configured`: the inherited one, else a new one with
/// an accept queue of `backlog`.
pub fn take_tcp(
    role: Role,
    configured: SocketAddr,
    backlog: i32,
) -> std::io::Result<std::net::TcpListener> {
    match take(role, configured, true) {
        Some(fd) => {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok(listener)
        }
        None => net::bind_std_listener(configured, backlog),
    }
}

/// The UDP socket for `role` (the gossip socket, or a UDP service's) at `configured`: the
/// inherited one, else a new one.
pub fn take_udp(role: Role, configured: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    match take(role, configured, false) {
        Some(fd) => Ok(std::net::UdpSocket::from(fd)),
        None => std::net::UdpSocket::bind(configured),
    }
}

/// Keeps a socket in the handover list while it is open; dropping it takes it out.
#[derive(Debug)]
pub struct Held(u64);

impl Drop for Held {
    fn drop(&mut self) {
        lock(&OPEN).retain(|open| open.id != self.0);
    }
}

/// Lists `socket` (for `role`, configured as `configured`) for handing over while the
/// returned guard lives.
pub fn hold(role: Role, configured: SocketAddr, socket: impl AsFd) -> std::io::Result<Held> {
    let fd = socket.as_fd().try_clone_to_owned()?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    lock(&OPEN).push(Open {
        id,
        role,
        configured,
        fd,
    });
    Ok(Held(id))
}

/// [`hold`] for a service's listener. A failure (out of descriptors) is logged, and that
/// listener is then left out of an upgrade's handover.
pub fn hold_service(configured: SocketAddr, listener: impl AsFd) -> Option<Held> {
    hold(Role::Service, configured, listener)
        .inspect_err(|e| tracing::warn!(listen = %configured, error = %e, "cannot list a listener for upgrades"))
        .ok()
}

/// Tells whoever waits that this process serves: the old process of an upgrade, systemd
/// (`READY=1`, and `MAINPID` after an upgrade), the PID file. Closes the inherited sockets
/// no part of the configuration took.
pub fn ready() {
    for left in lock(&INHERITED).drain(..) {
        let at = socket2::SockRef::from(&left.fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket());
        tracing::warn!(role = left.role.map_or("systemd", Role::word), configured = %left.configured, address = ?at, "an inherited socket matches nothing in the configuration: closed");
    }
    if let Some(path) = OPTIONS.get().and_then(|o| o.pid_file.as_ref()) {
        if let Err(e) = host::write(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the PID file");
        }
    }
    host::notify_ready(UPGRADED.load(Ordering::Relaxed));
    if let Some(conn) = lock(&HANDOVER).take() {
        if let Err(e) = wire::say(&conn, wire::READY) {
            tracing::warn!(error = %e, "upgrade: cannot tell the old process this one is ready");
        }
    }
}

/// Whether this process handed its sockets to a new one (it then drains without them).
pub fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::Relaxed)
}

/// At exit: the PID file goes, unless a new process has written its own.
pub fn at_exit() {
    if let Some(path) = OPTIONS.get().and_then(|o| o.pid_file.as_ref()) {
        host::remove_own(path);
    }
}

/// Upgrades the binary (on SIGUSR2): starts the new process, hands it the sockets, and on its
/// word that it is ready cancels `shutdown` (this process then drains). A failure is logged
/// and changes nothing; one upgrade at a time.
pub async fn begin(shutdown: CancellationToken) {
    if UPGRADING.swap(true, Ordering::AcqRel) {
        tracing::warn!("upgrade refused: one is under way");
        return;
    }
    tracing::info!("upgrade: starting the new process");
    let outcome = tokio::task::spawn_blocking(upgrade)
        .await
        .unwrap_or_else(|e| Err(format!("the upgrade task failed: {e}")));
    match outcome {
        Ok(pid) => {
            HANDED_OVER.store(true, Ordering::Relaxed);
            tracing::info!(
                new_pid = pid,
                "upgrade: the new process serves; this one stops accepting and drains"
            );
            shutdown.cancel();
        }
        Err(reason) => {
            tracing::error!("upgrade failed: {reason}; this process keeps serving");
            // Written again (same ID, new time): `tierlb --upgrade` learns of the failure.
            if let Some(path) = OPTIONS.get().and_then(|o| o.pid_file.as_ref()) {
                let _ = host::write(path);
            }
            UPGRADING.store(false, Ordering::Release);
        }
    }
}

/// Starts the new process and hands over; its process ID once it is ready.
fn upgrade() -> Result<u32, String> {
    let options = OPTIONS
        .get()
        .ok_or("the process was not started for upgrades")?;
    let name = format!(
        "tierlb-upgrade-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    );
    let listener =
        wire::listen(&name).map_err(|e| format!("cannot open the handover socket: {e}"))?;
    let mut child = Command::new(&options.exe)
        .args(&options.args)
        .env(VAR, &name)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", options.exe.display()))?;
    let pid = child.id();
    match hand_over(&listener, &mut child) {
        Ok(()) => Ok(pid),
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(reason)
        }
    }
}

/// Waits for the new process to connect, sends it the sockets, waits for its word.
fn hand_over(listener: &OwnedFd, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    let io = |e: std::io::Error| format!("the handover failed: {e}");
    let conn = loop {
        waiting(child, deadline, "connected")?;
        if wire::readable(listener, LOOK).map_err(io)? {
            let (conn, peer) = wire::accept(listener).map_err(io)?;
            if u32::try_from(peer).ok() == Some(child.id()) {
                break conn;
            }
            tracing::warn!(
                peer,
                "upgrade: a connection from another process to the handover socket: refused"
            );
        }
    };
    let entries: Vec<(String, String, OwnedFd)> = lock(&OPEN)
        .iter()
        .map(|o| {
            Ok((
                o.role.word().to_owned(),
                o.configured.to_string(),
                o.fd.try_clone()?,
            ))
        })
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    wire::send(&conn, &entries).map_err(io)?;
    loop {
        waiting(child, deadline, "ready")?;
        if wire::readable(&conn, LOOK).map_err(io)? {
            return match wire::hear(&conn).map_err(io)?.as_str() {
                wire::READY => Ok(()),
                _ => Err("the new process closed the handover before it was ready".to_owned()),
            };
        }
    }
}

/// An error when the new process has exited or the deadline has passed.
fn waiting(child: &mut Child, deadline: Instant, what: &str) -> Result<(), String> {
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!(
            "the new process exited ({status}) before it was {what}; its log says why"
        ));
    }
    if Instant::now() >= deadline {
        return Err(format!(
            "the new process was not {what} within {}s",
            READY_WITHIN.as_secs()
        ));
    }
    Ok(())
}
