//! The state file (`state_file`): operator decisions (drain and enable, each with who took it
//! and when) kept across restarts. Written atomically (a temporary file beside it, synced,
//! renamed over it) whenever the decisions in force change, whoever took them (this
//! instance's admin endpoint, or a cluster peer); read at start, where each saved decision is
//! adopted like a peer's: only if it is later than the one known. A file that cannot be read
//! or parsed is ignored with a warning: tierlb starts as if it had none.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::node::Decision;
use crate::service::Service;

/// The format's version, written in the file.
const VERSION: u64 = 1;

/// One state file and what was last written to it.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    written: Mutex<Option<String>>,
}

/// One saved decision: a service's node, and the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Saved {
    service: String,
    node: String,
    decision: Decision,
}

impl StateFile {
    /// The state file at `path` (nothing is read or written yet).
    pub fn new(path: &Path) -> StateFile {
        StateFile {
            path: path.to_owned(),
            written: Mutex::new(None),
        }
    }

    /// Adopts the saved decisions on `services`' nodes, each only if later than the one the
    /// node has. A missing file is a first start; an unreadable one is logged and ignored.
    pub fn restore(&self, services: &[Arc<Service>]) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "state file unreadable: starting without it");
                return;
            }
        };
        let saved = match parse(&text) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "state file is not one tierlb wrote: starting without it");
                return;
            }
        };
        let mut applied = 0;
        for entry in saved {
            let node = services
                .iter()
                .find(|s| s.name == entry.service)
                .and_then(|s| s.upstream().nodes.find(&entry.node).cloned());
            let Some(node) = node else {
                tracing::debug!(service = %entry.service, node = %entry.node, "state file names a node not configured: skipped");
                continue;
            };
            let decision = entry.decision.clone();
            if node.peers.adopt(entry.decision, Decision::later_than) {
                node.apply(&decision, &format!("the state file ({})", decision.by));
                applied += 1;
            }
        }
        tracing::info!(path = %self.path.display(), decisions = applied, "state file read");
    }

    /// Writes the decisions now in force on `services`' nodes, if they changed since the
    /// last write. A failure is logged, and tried again at the next change.
    pub fn save(&self, services: &[Arc<Service>]) {
        let mut decisions = Vec::new();
        for service in services {
            for node in &service.upstream().nodes.nodes {
                if let Some(d) = node.peers.decision() {
                    let mut entry = Map::new();
                    entry.insert("service".into(), Value::from(service.name.as_str()));
                    entry.insert("node".into(), Value::from(node.address.to_string()));
                    entry.insert("drained".into(), Value::from(d.drained));
                    entry.insert("stamp".into(), Value::from(d.stamp));
                    if let Some(weight) = d.weight {
                        entry.insert("weight".into(), Value::from(weight));
                    }
                    entry.insert("by".into(), Value::from(d.by));
                    decisions.push(Value::Object(entry));
                }
            }
        }
        let mut file = Map::new();
        file.insert("version".into(), Value::from(VERSION));
        file.insert("decisions".into(), Value::Array(decisions));
        let text = Value::Object(file).to_string() + "\n";
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if written.as_deref() == Some(text.as_str()) {
            return;
        }
        match crate::upgrade::host::write_atomically(&self.path, text.as_bytes()) {
            Ok(()) => *written = Some(text),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the state file")
            }
        }
    }
}

/// The decisions of a state file's text.
fn parse(text: &str) -> Result<Vec<Saved>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value["version"].as_u64() != Some(VERSION) {
        return Err(format!(
            "version {} (this tierlb reads {VERSION})",
            value["version"]
        ));
    }
    let list = value["decisions"]
        .as_array()
        .ok_or("no list of decisions")?;
    list.iter()
        .map(|d| {
            let text = |key: &str| {
                d[key]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("a decision without `{key}`"))
            };
            Ok(Saved {
                service: text("service")?,
                node: text("node")?,
                decision: Decision {
                    drained: d["drained"]
                        .as_bool()
                        .ok_or("a decision without `drained`")?,
                    weight: match &d["weight"] {
                        Value::Null => None,
                        w => Some(
                            w.as_u64()
                                .and_then(|w| u32::try_from(w).ok())
                                .filter(|w| *w <= crate::node::MAX_WEIGHT)
                                .ok_or("a weight that is not a number from 0 to 256")?,
                        ),
                    },
                    stamp: d["stamp"].as_u64().ok_or("a decision without `stamp`")?,
                    by: text("by")?,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_and_garbage_is_refused() {
        let text = r#"{"version":1,"decisions":[{"service":"web","node":"10.0.0.1:80","drained":true,"stamp":42,"by":"admin client 10.0.0.9"}]}"#;
        let saved = parse(text).expect("parses");
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].node, "10.0.0.1:80");
        assert!(saved[0].decision.drained);
        assert!(parse("{").is_err());
        assert!(parse(r#"{"version":2,"decisions":[]}"#).is_err());
        assert!(parse(r#"{"version":1,"decisions":[{"service":"web"}]}"#).is_err());
    }
}
