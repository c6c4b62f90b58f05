//! The command line, and how its flags override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config::{Config, ConfigError, NodeAddr, Overrides};

/// tierlb: a TCP load balancer. Least connections among healthy nodes, passive and active
/// health checks, retry on another node when a connect fails.
#[derive(Debug, Parser)]
#[command(name = "tierlb", version, about, long_about = None)]
pub struct Args {
    /// TOML config file (see config.example.toml for every key).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept clients on, e.g. 0.0.0.0:8000 (overrides the file's `listen`).
    #[arg(short = 'l', long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// A backend node, host:port; repeat for several. Replaces the file's node list.
    #[arg(short = 'p', long = "node", value_name = "HOST:PORT")]
    pub nodes: Vec<NodeAddr>,

    /// Serve metrics, status and the status page over HTTP on ADDR, e.g. 127.0.0.1:9090
    /// (overrides the file's `[admin] listen`; off unless given).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Validate the configuration, print a summary and exit; starts nothing.
    #[arg(long)]
    pub check: bool,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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
    /// The configuration: the file (if given), with `-l` and `-p` applied on top.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let overrides = Overrides {
            listen: self.listen,
            nodes: self.nodes.clone(),
            admin: self.admin,
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}
