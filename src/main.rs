//! The `tierlb` binary: parse the command line, load the config, start logging, serve.
//!
//! Exit codes: 0 after a clean shutdown (or a passing `--check`), 1 when serving fails
//! (e.g. the listen address is taken), 2 for a bad command line or configuration.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use tierlb::cli::{Args, LogFormat};
use tierlb::Config;

fn main() -> ExitCode {
    let args = Args::parse();
    if let (true, Some(pid_file)) = (args.upgrade, &args.pid_file) {
        return match tierlb::upgrade::host::request(pid_file, Duration::from_secs(35)) {
            Ok((old, new)) => {
                println!("upgraded: process {old} replaced by {new}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tierlb: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match args.load_config() {
        Ok(config) => config,
        Err(e) => {
            // Several errors come one per line, each with the prefix.
            for line in e.to_string().lines() {
                eprintln!("tierlb: error: {line}");
            }
            return ExitCode::from(2);
        }
    };
    if args.check {
        print!("configuration ok\n{}", config.summary());
        return ExitCode::SUCCESS;
    }
    init_logging(args.log_format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // More descriptors mean more clients at once (see tierlb::limits); the hard limit is the
    // operator's to set.
    match tierlb::limits::raise_nofile() {
        Ok((before, after)) if after > before => {
            tracing::info!(
                before,
                after,
                "raised the open-files limit to the hard limit"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let options = tierlb::upgrade::Options {
        exe: std::env::current_exe()
            .unwrap_or_else(|_| std::env::args_os().next().unwrap_or_default().into()),
        args: std::env::args_os().skip(1).collect(),
        pid_file: args.pid_file.clone(),
    };
    if let Err(e) = tierlb::upgrade::at_start(options) {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let served = serve(args, config);
    tierlb::upgrade::at_exit();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`). A line that cannot be
/// written (standard error closed, a full disk) is dropped: reporting that failure on the same
/// standard error would panic the task that logged.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Builds the runtime for `config.threads` and serves until a signal ends the drain.
///
/// With one thread everything (accept loop, connections, probes) runs on the main thread, with
/// no cross-thread wake-ups at all. With more, the server itself is spawned so that the accept
/// loop runs on a worker like every connection, and the main thread only waits.
fn serve(args: Args, config: Config) -> anyhow::Result<()> {
    let threads = config.threads;
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let (reloads, reloaded) = tokio::sync::mpsc::unbounded_channel();
        // SIGHUP re-reads the same file with the same flags; a bad file is reported exactly
        // as --check would, and the configuration in force stays.
        let reload = move || {
            if reloads.send(args.load_config()).is_err() {
                tracing::debug!("reload after the server stopped: ignored");
            }
        };
        let upgrading = shutdown.clone();
        let upgrade = move || {
            tokio::spawn(tierlb::upgrade::begin(upgrading.clone()));
        };
        tierlb::shutdown::handle_signals(shutdown.clone(), reload, upgrade)
            .context("cannot install signal handlers")?;
        tokio::spawn(tierlb::run(config, shutdown, reloaded))
            .await
            .context("the server task failed")??;
        anyhow::Ok(())
    })?;
    // Connections still open after the drain deadline are closed here.
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}
