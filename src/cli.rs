//! The command line, and how its flags override the config file: `-l`, `-p`, `--admin`, and
//! the admin token from `--admin-token-file` or the `TIERLB_ADMIN_TOKEN` variable, and the
//! cluster's advertised address from `TIERLB_CLUSTER_ADVERTISE`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config::{
    check_token, parse_listen, parse_node_flag, Config, ConfigError, NodeAddr, Overrides,
};

/// The environment variable that may hold the admin token.
pub const TOKEN_VAR: &str = "TIERLB_ADMIN_TOKEN";
/// The environment variable that may hold this instance's cluster address (`IP:PORT`), for
/// platforms that know it only at start (a Kubernetes pod's IP).
pub const ADVERTISE_VAR: &str = "TIERLB_CLUSTER_ADVERTISE";

/// `TIERLB_CLUSTER_ADVERTISE`, if set: an `IP:PORT` peers can dial.
fn cluster_advertise() -> Result<Option<SocketAddr>, ConfigError> {
    let Ok(text) = std::env::var(ADVERTISE_VAR) else {
        return Ok(None);
    };
    match text.parse::<SocketAddr>() {
        Ok(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => Ok(Some(addr)),
        _ => Err(ConfigError::Usage(format!(
            "{ADVERTISE_VAR} is `{text}`; it must be this instance's IP:PORT as peers dial it, e.g. 10.0.0.5:7946"
        ))),
    }
}

/// tierlb: a TCP load balancer. Least connections among healthy nodes, passive and active
/// health checks, retry on another node when a connect fails.
#[derive(Debug, Parser)]
#[command(
    name = "tierlb",
    version,
    about,
    long_about = None,
    after_help = "Environment: TIERLB_ADMIN_TOKEN (the admin token), TIERLB_CLUSTER_ADVERTISE \
                  (this instance's cluster IP:PORT, replacing [cluster] advertise), RUST_LOG."
)]
pub struct Args {
    /// TOML config file (see config.example.toml for every key).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept clients on, e.g. 0.0.0.0:8000, or :8000 for every IPv4 address
    /// (overrides the file's `listen`).
    #[arg(short = 'l', long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// A backend node, host:port; repeat for several. Replaces the file's node list.
    #[arg(short = 'p', long = "node", value_name = "HOST:PORT", value_parser = parse_node_flag)]
    pub nodes: Vec<NodeAddr>,

    /// Serve metrics, status and the status page over HTTP on ADDR, e.g. 127.0.0.1:9090
    /// (overrides the file's `[admin] listen`; off unless given).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub admin: Option<SocketAddr>,

    /// Read the admin token from FILE (overrides TIERLB_ADMIN_TOKEN and `[admin] token`).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Validate the configuration, print a summary and exit; starts nothing.
    #[arg(long)]
    pub check: bool,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Write the process ID to FILE once serving (atomically); removed at exit.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Upgrade the running tierlb whose PID is in --pid-file (SIGUSR2) and wait until the new
    /// process serves; exit 0 then, 1 if it did not within 35 s.
    #[arg(long, requires = "pid_file")]
    pub upgrade: bool,
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

impl Args {
    /// The configuration: the file (if given), with the flags and the token variable applied
    /// on top. Read again, token file included, on every reload.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let overrides = Overrides {
            listen: self.listen,
            nodes: self.nodes.clone(),
            admin: self.admin,
            admin_token: self.admin_token()?,
            cluster_advertise: cluster_advertise()?,
        };
        Config::load(self.config.as_deref(), &overrides)
    }

    /// The admin token from `--admin-token-file` (first line, trailing white space dropped),
    /// else from `TIERLB_ADMIN_TOKEN`; checked like `[admin] token`.
    fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        let (token, origin) = match &self.admin_token_file {
            Some(path) => {
                let shown = path.display();
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Usage(format!(
                        "--admin-token-file {shown}: cannot read the token: {e}"
                    ))
                })?;
                let token = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_end()
                    .to_owned();
                (token, format!("--admin-token-file {shown}: the token"))
            }
            None => match std::env::var(TOKEN_VAR) {
                Ok(token) => (token, format!("{TOKEN_VAR}: the token")),
                Err(_) => return Ok(None),
            },
        };
        check_token(&token)
            .map(|()| Some(token))
            .map_err(|why| ConfigError::Usage(format!("{origin} {why}")))
    }
}
