//! Signals that stop tierlb: SIGTERM (what `docker stop`, systemd and Kubernetes send) and
//! SIGINT (Ctrl-C) both mean "stop accepting, let open connections finish, exit 0".

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT. The handlers are installed before this
/// returns, so a signal that arrives right after start-up is not lost.
pub fn cancel_on_signal(shutdown: CancellationToken) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}
