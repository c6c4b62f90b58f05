//! One client connection, from accept to close: pick and connect (with retries, and a wait in
//! the service's queue while every node is full), splice, the
//! node's verdict on what it did with the client, the retry of a client the node dropped
//! untouched, and the close counted and logged (with `access_log`, one `tierlb::access` line
//! per connection; off, it costs nothing: not even a clock read).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::config::show_duration;
use crate::connect::{AttemptError, Attempts, Client, Connected};
use crate::node::{FailureKind, Node, NodeSet, Observation, Source};
use crate::proxy_protocol;
use crate::queue::{self, Left, Unserved};
use crate::service::{Active, Service};
use crate::splice::{self, End, NodeEnd, Outcome};
use crate::upstream::{Settings, Upstream};

mod access;

use access::{Access, EndText};

/// Serves one client: connect to a node (with retries), splice, count and log the end. The
/// connection-limit permits, the node slot and the listener's active count are released when this
/// returns, on every path.
/// (An `async move` block, as [`serve`] explains.)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
pub fn handle<P: Send>(
    mut client: TcpStream,
    peer: SocketAddr,
    service: Arc<Service>,
    permits: P,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let mut active = Active::new(&service);
        // What the greeting needs lives in this block, so none of it is kept beside the
        // connection's own future while it runs.
        let serving = {
            let upstream = service.upstream();
            let settings = &upstream.settings;
            let opened = settings.access_log.then(Instant::now);
            let Some(who) = greet(&mut client, peer, &service, settings).await else {
                return;
            };
            // A refused client is closed at once (counted and logged by the guard).
            if active.admit(who.addr.ip(), &settings.admission).is_err() {
                return;
            }
            serve(client, who, Arc::clone(&service), permits, None, opened)
        };
        serving.await;
    }
}

/// What was read from a client of a shared address to route it.
#[derive(Debug)]
pub struct Routed {
    /// The bytes taken from the client to route it (a ClientHello that came cut short, or
    /// what came instead); empty when they were only peeked at and are still in its socket.
    pub hello: Vec<u8>,
    /// The server name it asked for.
    pub sni: Option<String>,
}

/// Serves a client already greeted (its PROXY header read, if its source sends one). `first`
/// holds what was taken from it to route it: those bytes are written to the node before
/// anything else, and then freed; its server name is kept for the access log only. A node
/// that drops a client whose bytes were taken is not given it again (the bytes are gone).
/// `opened` is when it was accepted, if connections are logged. The caller counts it in the
/// service's open connections.
///
/// Written as a function returning an `async move` block rather than an `async fn`: the block
/// uses its captured arguments in place, where an `async fn` would keep a second copy of each
/// in every state of its future, and this future is what an open connection costs.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
pub fn serve<P: Send>(
    mut client: TcpStream,
    who: Client,
    service: Arc<Service>,
    permits: P,
    mut first: Option<Routed>,
    opened: Option<Instant>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Held (in place) until the connection ends.
        let _permits = &permits;
        if let (Some(routed), None) = (first.as_mut(), opened) {
            routed.sni = None;
        }
        let upstream = service.upstream();
        let settings = &upstream.settings;
        let key = upstream.key(
            service.next_pick.fetch_add(1, Ordering::Relaxed),
            who.addr.ip(),
        );
        let mut attempts = Attempts::default();
        loop {
            // The connect phase (retries, DNS, timeouts, the queue) is a larger future than the
            // splice that follows; boxing it keeps it out of this task's own state, so a
            // long-lived connection holds only what the splice needs.
            let queue = &service.queue;
            let Connected {
                mut stream,
                slot,
                index,
                took,
                falls,
            } = match Box::pin(queue::connect(
                queue,
                &upstream,
                key,
                &mut attempts,
                who,
                &client,
            ))
            .await
            {
                Ok(connected) => connected,
                Err(error) => {
                    if let Some(opened) = opened {
                        let entry = Access {
                            service: &service.name,
                            sni: sni(&first),
                            client: who.addr,
                            node: None,
                            moved: (0, 0),
                            took: None,
                            opened,
                            retries: attempts.made().saturating_sub(1),
                        };
                        entry.log(&format_args!("no node: {error}"));
                    }
                    return failed(&service, who.addr, &error);
                }
            };
            // Matched in one statement, so nothing of it is kept while the splice runs.
            let forwarded = match taken(&mut first) {
                Some(bytes) => {
                    if let Err(e) = forward(&mut stream, &bytes, settings).await {
                        let node = slot.node();
                        node.stats.failed(FailureKind::Other);
                        tracing::debug!(service = %service.name, client = %who.addr, node = %node.address, error = %e, "cannot pass the client's first bytes on to the node");
                        return;
                    }
                    true
                }
                None => false,
            };
            // Bytes already passed on cannot be given to another node: no retry then.
            let once;
            let rules = if forwarded {
                once = splice::Rules {
                    retry_window: Duration::ZERO,
                    ..settings.rules
                };
                &once
            } else {
                &settings.rules
            };
            let on_silence = rules.response.map(|_| silence(&upstream, slot.node()));
            let outcome = splice::splice(client, stream, rules, on_silence).await;
            // The slot goes back before the close is counted and logged, so whoever sees the log
            // line (or the counters) sees the node's active count already lowered.
            let node = Arc::clone(slot.node());
            drop(slot);
            service.queue.wake();
            node.stats
                .closed(outcome.client_to_node, outcome.node_to_client);
            verdict(&upstream.nodes, &node, &outcome, falls);
            let Outcome {
                client_to_node,
                node_to_client,
                end,
                unanswered,
            } = outcome;
            match end {
                End::Dropped(back) => {
                    let reason = unanswered.map_or("closed", |e| e.reason());
                    tracing::debug!(service = %service.name, client = %who.addr, node = %node.address, reason, "node dropped the client at once; trying another");
                    attempts.dropped(index, &node, AttemptError::Unanswered(reason));
                    client = back;
                }
                end => {
                    let moved = (client_to_node, node_to_client);
                    if let Some(opened) = opened {
                        let entry = Access {
                            service: &service.name,
                            sni: sni(&first),
                            client: who.addr,
                            node: Some(&node),
                            moved,
                            took: Some(took),
                            opened,
                            retries: attempts.made().saturating_sub(1),
                        };
                        entry.log(&EndText(&end));
                    }
                    return closed(&service, who.addr, &node, moved, unanswered, &end);
                }
            }
        }
    }
}

/// The bytes taken from a routed client, to pass on to its node first (once).
fn taken(first: &mut Option<Routed>) -> Option<Vec<u8>> {
    first
        .as_mut()
        .map(|routed| std::mem::take(&mut routed.hello))
        .filter(|bytes| !bytes.is_empty())
}

/// The server name a routed client asked for, kept only when connections are logged.
fn sni(first: &Option<Routed>) -> Option<&str> {
    first.as_ref().and_then(|routed| routed.sni.as_deref())
}

/// Writes `bytes` to the node within the connect timeout.
async fn forward(stream: &mut TcpStream, bytes: &[u8], settings: &Settings) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let limit = settings.timeouts.connect;
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// The client as its node is told of it: the peer, or, when the peer is a listed PROXY
/// source, the client its header names. `None` when that header is missing, malformed, too
/// long or late: the client is then closed, counted and logged (a few lines a second at most).
pub async fn greet(
    client: &mut TcpStream,
    peer: SocketAddr,
    service: &Service,
    settings: &Settings,
) -> Option<Client> {
    let local = if settings.sends_proxy {
        client.local_addr().unwrap_or(service.bound)
    } else {
        service.bound
    };
    let mut who = Client { addr: peer, local };
    if !settings
        .accept_proxy_from
        .iter()
        .any(|r| r.contains(peer.ip()))
    {
        return Some(who);
    }
    let limit = settings.timeouts.handshake;
    // Boxed: only listed sources wait here, and inline this wait would be the largest state
    // of every connection's task, for its whole life.
    let read = Box::pin(tokio::time::timeout(limit, proxy_protocol::read(client)));
    let refused = match read.await {
        Ok(Ok(header)) => {
            who.addr = header.source.unwrap_or(peer);
            who.local = header.destination.unwrap_or(local);
            return Some(who);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no PROXY header within {}", show_duration(limit)),
    };
    service.listener.failed.fetch_add(1, Ordering::Relaxed);
    if service.client_failures.allow() {
        tracing::warn!(service = %service.name, client = %peer, "closing client: {refused}");
    }
    None
}

/// What a silent node's connection tells its health when the client's bytes go unanswered
/// for `[timeouts] response`: the node failed to answer (as a dropped client does, so only
/// an answer clears it and it returns on probation). The connection itself goes on.
fn silence(upstream: &Arc<Upstream>, node: &Arc<Node>) -> splice::OnSilence {
    let (upstream, node) = (Arc::clone(upstream), Arc::clone(node));
    Box::new(move |limit| {
        node.stats.failed(FailureKind::Unanswered);
        let reason = format_args!("no response within {}", show_duration(limit));
        upstream
            .nodes
            .observe(&node, Source::Client, Observation::Unanswered, &reason);
    })
}

/// Tells the node's health what it did with the client: answered (a byte came back), or
/// ended before answering while the client was still sending. An answer on a connection
/// made before the node last went down (`falls` then) does not count towards bringing it
/// back: its bytes may all predate the fall (a killed node's old connections end after it).
fn verdict(nodes: &NodeSet, node: &Node, outcome: &Outcome, falls: u32) {
    if let Some(how) = outcome.unanswered {
        node.stats.failed(FailureKind::Unanswered);
        nodes.observe(node, Source::Client, Observation::Unanswered, &how.reason());
    } else if outcome.node_to_client > 0 && (node.is_up() || node.stats.falls() == falls) {
        nodes.observe(node, Source::Client, Observation::Answered, &"answered");
    }
}

/// A client no node took: counted, and logged unless too many fail this second. One that
/// left the queue by itself is no failure.
fn failed(service: &Service, peer: SocketAddr, error: &Unserved) {
    match error {
        Unserved::Queue(Left::Gone) => {
            tracing::debug!(service = %service.name, client = %peer, "client left the queue");
            return;
        }
        Unserved::Queue(Left::TimedOut(_)) => {
            service.queue.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        Unserved::Connect(_) => {}
    }
    service.listener.failed.fetch_add(1, Ordering::Relaxed);
    if service.client_failures.allow() {
        tracing::warn!(service = %service.name, client = %peer, %error, "closing client: no node could take it");
    }
}

/// A spliced connection that ended, with the bytes it `moved` (client to node, node to
/// client): logged at debug level, or as a failure when the node ended it without answering.
fn closed(
    service: &Service,
    peer: SocketAddr,
    node: &Node,
    moved: (u64, u64),
    unanswered: Option<NodeEnd>,
    end: &End,
) {
    if let Some(how) = unanswered {
        service.listener.failed.fetch_add(1, Ordering::Relaxed);
        if service.client_failures.allow() {
            tracing::warn!(service = %service.name, client = %peer, node = %node.address, reason = how.reason(), "client failed: the node ended after the client's bytes were sent");
        }
    }
    tracing::debug!(
        service = %service.name,
        client = %peer,
        node = %node.address,
        client_to_node = moved.0,
        node_to_client = moved.1,
        end = %EndText(end),
        "connection closed"
    );
}
