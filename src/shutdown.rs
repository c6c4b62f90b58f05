//! Signals, each with why it means what it does:
//! - SIGTERM (what `docker stop`, systemd and Kubernetes send) and SIGINT (Ctrl-C): stop
//!   accepting, let open connections finish, exit 0.
//! - SIGUSR1 (HAProxy's "soft stop", which operators coming from it send out of habit): the
//!   same graceful stop as SIGTERM, rather than the default action of killing the process.
//! - SIGHUP (the reload convention of nginx, HAProxy and most daemons): read the config
//!   again and put it in force without dropping a connection.
//! - SIGUSR2 (HAProxy's and nginx's binary-upgrade signal): start the binary again and hand
//!   it the listening sockets (see `upgrade`).

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM, SIGINT or SIGUSR1, calls `reload` on each
/// SIGHUP and `upgrade` on each SIGUSR2. The handlers are installed before this returns, so a
/// signal right after start-up is not lost.
pub fn handle_signals(
    shutdown: CancellationToken,
    reload: impl Fn() + Send + 'static,
    upgrade: impl Fn() + Send + 'static,
) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = usr1.recv() => "SIGUSR1",
                _ = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "reloading the configuration");
                    reload();
                    continue;
                }
                _ = usr2.recv() => {
                    tracing::info!(signal = "SIGUSR2", "upgrading the binary");
                    upgrade();
                    continue;
                }
            };
            tracing::info!(signal = name, "shutting down");
            shutdown.cancel();
            return;
        }
    });
    Ok(())
}
