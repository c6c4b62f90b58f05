//! Who may use the admin endpoint: the bearer token of the write endpoints, and the `Host`
//! check that keeps a web page elsewhere from reading the endpoint through DNS rebinding.
//!
//! A browser always sends the name it connected to as `Host`. A page on `evil.example` that
//! makes its name resolve to tierlb's address would send `Host: evil.example`; tierlb only
//! answers requests whose `Host` is an IP address, `localhost`, or a name listed in
//! `[admin] hosts`. Requests without `Host` (HTTP/1.0 tools) come from no browser and pass.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::state::Shared;

/// Middleware: refuses (421) a request whose `Host` names no allowed host.
pub async fn check_host(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match host {
        Some(host) if !host_allowed(&host, &shared.config().admin.hosts) => (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "host `{host}` is not served here: use the admin address, or add the name to [admin] hosts\n"
            ),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// Whether a `Host` header value is an IP address, `localhost`, or one of `allowed` (names
/// compared without case; the port is not compared).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Checks the bearer token; returns the refusal, if any: 403 if no token is configured or
/// the one sent is wrong, 401 if none was sent. The scheme is matched without case (RFC 7235)
/// and the token compared in constant time.
pub fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let config = shared.config();
    let Some(expected) = config.admin.token.as_deref() else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "write endpoints are disabled: set [admin] token, --admin-token-file or TIERLB_ADMIN_TOKEN\n",
            )
                .into_response(),
        );
    };
    let Some(sent) = bearer(headers) else {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "send the admin token as `Authorization: Bearer TOKEN`\n",
            )
                .into_response(),
        );
    };
    if bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        None
    } else {
        Some((StatusCode::FORBIDDEN, "wrong admin token\n").into_response())
    }
}

/// The token of an `Authorization: Bearer TOKEN` header, the scheme in any case.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let allowed = ["lb.example.com".to_owned()];
        for ok in [
            "127.0.0.1:9090",
            "10.0.0.5",
            "[::1]:9090",
            "localhost:9090",
            "LB.example.com:9090",
            "lb.example.com",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "evil.example",
            "127.0.0.1.evil.example",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn bearer_scheme_in_any_case() {
        let mut headers = HeaderMap::new();
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
        ] {
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(bearer(&headers), want, "{value}");
        }
    }
}
