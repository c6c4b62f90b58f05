//! A small authoritative DNS server for the discovery tests, on 127.0.0.1 (UDP and TCP, one
//! ephemeral port): A, AAAA and SRV records the test changes as it goes, a TTL, and faults
//! (no answer at all, or every answer late). It logs every query it gets, so a test can
//! count them. tierlb is pointed at it with `resolvers = ["127.0.0.1:PORT"]`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// One SRV record: priority, weight, port, target.
pub type Srv = (u16, u16, u16, &'static str);

#[derive(Default)]
struct Zone {
    addresses: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<Srv>>,
    ttl: u32,
    silent: bool,
    delay: Duration,
    queries: Vec<(Instant, String, RecordType)>,
}

/// The server; it stops when dropped.
pub struct DnsServer {
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A name as kept: lower case, without the final dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Starts a server with no records and a TTL of 1 s, on an ephemeral port.
    pub async fn start() -> DnsServer {
        DnsServer::start_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr` (127.0.0.1:53 inside a test's own network namespace, say).
    pub async fn start_at(addr: SocketAddr) -> DnsServer {
        let udp = UdpSocket::bind(addr).await.expect("bind DNS UDP");
        let addr = udp.local_addr().expect("DNS addr");
        // The same port over TCP, for a truncated answer's retry; taken or not, UDP serves.
        let tcp = TcpListener::bind(addr).await.ok();
        let zone = Arc::new(Mutex::new(Zone {
            ttl: 1,
            ..Zone::default()
        }));
        let udp = Arc::new(udp);
        let mut tasks = Vec::new();
        let z = Arc::clone(&zone);
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let (udp, z, query) = (Arc::clone(&udp), Arc::clone(&z), buf[..n].to_vec());
                tokio::spawn(async move {
                    if let Some(answer) = answer(&z, &query).await {
                        let _ = udp.send_to(&answer, from).await;
                    }
                });
            }
        }));
        if let Some(tcp) = tcp {
            let z = Arc::clone(&zone);
            tasks.push(tokio::spawn(async move {
                while let Ok((mut stream, _)) = tcp.accept().await {
                    let z = Arc::clone(&z);
                    tokio::spawn(async move {
                        let mut len = [0u8; 2];
                        while stream.read_exact(&mut len).await.is_ok() {
                            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if stream.read_exact(&mut query).await.is_err() {
                                return;
                            }
                            let Some(answer) = answer(&z, &query).await else {
                                continue;
                            };
                            let len = u16::try_from(answer.len()).expect("small answer");
                            let _ = stream.write_all(&len.to_be_bytes()).await;
                            let _ = stream.write_all(&answer).await;
                        }
                    });
                }
            }));
        }
        DnsServer { addr, zone, tasks }
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone.lock().expect("zone lock")
    }

    /// Sets the A/AAAA records of `name` (none: the name has no address records).
    pub fn set_addresses(&self, name: &str, ips: &[IpAddr]) {
        self.zone().addresses.insert(key(name), ips.to_vec());
    }

    /// Sets the SRV records of `name`.
    pub fn set_srv(&self, name: &str, records: &[Srv]) {
        self.zone().srv.insert(key(name), records.to_vec());
    }

    /// Sets the TTL of every answer, in seconds.
    pub fn set_ttl(&self, seconds: u32) {
        self.zone().ttl = seconds;
    }

    /// Stops answering (`true`): queries are logged and dropped.
    pub fn set_silent(&self, silent: bool) {
        self.zone().silent = silent;
    }

    /// Delays every answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.zone().delay = delay;
    }

    /// Queries for `name` of type `kind` received since `since`.
    pub fn queries(&self, name: &str, kind: RecordType, since: Instant) -> usize {
        let name = key(name);
        self.zone()
            .queries
            .iter()
            .filter(|(at, n, k)| *at >= since && *n == name && *k == kind)
            .count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The answer to one query, after the configured delay; `None` when silent or unreadable.
async fn answer(zone: &Mutex<Zone>, query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let name = key(&question.name.to_ascii());
    let (delay, silent) = {
        let mut z = zone.lock().ok()?;
        z.queries
            .push((Instant::now(), name.clone(), question.query_type));
        (z.delay, z.silent)
    };
    if silent {
        return None;
    }
    tokio::time::sleep(delay).await;
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    let z = zone.lock().ok()?;
    let owner = Name::from_ascii(format!("{name}.")).ok()?;
    let known = z.addresses.contains_key(&name) || z.srv.contains_key(&name);
    let records: Vec<RData> = match question.query_type {
        RecordType::A => z
            .addresses
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(RData::A(A(*v4))),
                IpAddr::V6(_) => None,
            })
            .collect(),
        RecordType::AAAA => z
            .addresses
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(RData::AAAA(AAAA(*v6))),
                IpAddr::V4(_) => None,
            })
            .collect(),
        RecordType::SRV => z
            .srv
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|(priority, weight, port, target)| {
                let target = Name::from_ascii(format!("{}.", key(target))).ok()?;
                Some(RData::SRV(SRV::new(*priority, *weight, *port, target)))
            })
            .collect(),
        _ => Vec::new(),
    };
    if !known {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    for data in records {
        response.add_answer(Record::from_rdata(owner.clone(), z.ttl, data));
    }
    response.to_vec().ok()
}
