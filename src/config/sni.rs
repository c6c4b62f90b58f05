//! `sni`: the server names a service answers on a listen address it shares with other
//! services, and the rules of that sharing: each sharing service has `sni`, at most one has
//! none (the default), a name belongs to one service, and the sharing services trust the same
//! PROXY sources (the header is read before the name is known).

use super::walk::{Section, Walk};
use super::ServiceConfig;

/// `sni`: exact names and `*.domain` wildcards of one label, lower-cased, trailing dot
/// dropped, each once.
pub(super) fn names(walk: &mut Walk<'_>, section: &Section<'_>) -> Option<Vec<String>> {
    let list = walk.strings(section, "sni")?;
    let key = section.key("sni");
    if list.is_empty() {
        let span = section.table.get("sni").and_then(toml_edit::Item::span);
        let message = "is empty: list the server names, e.g. [\"app.example.com\"], or delete the line for the default service".to_owned();
        walk.error(&key, &span, message);
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, (text, span)) in list.into_iter().enumerate() {
        let key = format!("{key}[{i}]");
        match normalise(text) {
            Ok(name) if out.contains(&name) => {
                walk.error(&key, &span, format!("`{text}` is listed twice"));
            }
            Ok(name) => out.push(name),
            Err(message) => walk.error(&key, &span, message),
        }
    }
    Some(out)
}

/// A server name as matched: lower case, no trailing dot; `*.` only as a whole first label.
pub fn normalise(text: &str) -> Result<String, String> {
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let (wild, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let valid = !rest.is_empty() && name.len() <= 253 && rest.split('.').all(label_ok);
    if valid && (!wild || rest.contains('.')) {
        Ok(name)
    } else {
        Err(format!(
            "`{text}` is not a server name: write a DNS name such as \"app.example.com\", or \"*.example.com\" for exactly one more label"
        ))
    }
}

/// Checks `found`, read from `section`, against the services already read: a listen
/// address it shares must be shared by the rules. Returns whether it may be added.
pub(super) fn may_share(
    walk: &mut Walk<'_>,
    section: &Section<'_>,
    found: &ServiceConfig,
    services: &[ServiceConfig],
) -> bool {
    // A TCP and a UDP service may have one address: they are two sockets.
    let same: Vec<&ServiceConfig> = services
        .iter()
        .filter(|s| s.listen == found.listen && s.protocol == found.protocol)
        .collect();
    if found.protocol == super::Protocol::Udp {
        if let Some(other) = same.iter().find(|_| found.listen.port() != 0) {
            let message = format!(
                "`{}` is also the listen address of UDP service `{}`: give each UDP service an address of its own",
                found.listen, other.name
            );
            let at = walk.item(section, "listen").and_then(|(_, s)| s);
            walk.error(&section.key("listen"), &at, message);
            return false;
        }
        return true;
    }
    // Port 0 asks the kernel for a free port: services without `sni` each get their own.
    let with_sni = !found.sni.is_empty() || same.iter().any(|s| !s.sni.is_empty());
    if same.is_empty() || (found.listen.port() == 0 && !with_sni) {
        return true;
    }
    let span = |walk: &Walk<'_>, key: &str| walk.item(section, key).and_then(|(_, s)| s);
    if found.sni.is_empty() {
        if let Some(other) = same.iter().find(|s| s.sni.is_empty()) {
            let message = format!(
                "`{}` is also the listen address of service `{}`, and neither has `sni`: services may share an address when each has `sni`, at most one without (the default)",
                found.listen, other.name
            );
            let at = span(walk, "listen");
            walk.error(&section.key("listen"), &at, message);
            return false;
        }
    }
    for other in &same {
        if let Some(name) = found.sni.iter().find(|n| other.sni.contains(n)) {
            let message = format!(
                "`{name}` is also a name of service `{}` on {}: give each name to one service",
                other.name, found.listen
            );
            let at = span(walk, "sni");
            walk.error(&section.key("sni"), &at, message);
            return false;
        }
        if other.accept_proxy_from != found.accept_proxy_from {
            let message = format!(
                "differs from that of service `{}`, which shares {}: the PROXY header is read before the server name says which service a client is for; give both the same list",
                other.name, found.listen
            );
            let at = span(walk, "accept_proxy_from").or_else(|| span(walk, "listen"));
            walk.error(&section.key("accept_proxy_from"), &at, message);
            return false;
        }
    }
    true
}
