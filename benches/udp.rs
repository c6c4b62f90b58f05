//! The UDP side of the comparison (driven by `benches/udp.py`): an echo node, a closed-loop
//! load of request/response flows, and a holder of many idle flows.
//!
//!     udp echo ADDR                         echo every datagram back to its sender
//!     udp load TARGET FLOWS SIZE SECONDS    FLOWS flows, one SIZE-byte request in flight
//!                                           each; prints answered datagrams/s
//!     udp hold TARGET FLOWS                 FLOWS flows, one answered datagram each, then
//!                                           prints "ready" and holds them until stdin closes
//!
//! So that the load costs far less than the proxies it measures, each side reads in batches
//! (`recvmmsg`) and one socket stands for every flow: flow `i` sends from its own loopback
//! address (127.10.x.y, chosen per datagram with `IP_PKTINFO`), so the proxy sees FLOWS
//! clients while the load makes one system call per request and one per batch of replies.
//! A request carries its flow and a sequence number; an answer counts when it carries the
//! flow's current one. A request unanswered for 200 ms is sent again and counted; the figures
//! count answers only. Run through `cargo bench --bench udp --no-run` and the script; a bare
//! `cargo bench` runs it with no mode and it returns at once.

use std::io::{self, BufRead, IoSlice, IoSliceMut, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmmsg, sendmmsg, sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders,
    SockaddrIn,
};

/// How long a request waits for its answer before it is sent again.
const RESEND: Duration = Duration::from_millis(200);
/// Datagrams read (and echoed) per system call at most.
const BATCH: usize = 64;
/// The largest datagram the tool handles.
const MAX: usize = 2048;
/// Socket buffers, so that a thousand requests in flight are not dropped on the way.
const SOCKET_BUFFER: usize = 8 << 20;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, what: &str| -> String {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing {what}; see the module doc"))
    };
    let number = |i: usize, what: &str| -> usize { arg(i, what).parse().expect(what) };
    match args.first().map(String::as_str) {
        Some("echo") => echo(arg(1, "ADDR").parse().expect("ADDR")),
        Some("load") => {
            let target = arg(1, "TARGET").parse().expect("TARGET");
            let seconds: f64 = arg(4, "SECONDS").parse().expect("SECONDS");
            let size = number(3, "SIZE").clamp(8, MAX);
            load(
                target,
                number(2, "FLOWS"),
                size,
                Duration::from_secs_f64(seconds),
            );
        }
        Some("hold") => hold(
            arg(1, "TARGET").parse().expect("TARGET"),
            number(2, "FLOWS"),
        ),
        _ => eprintln!("udp bench tool: echo, load or hold (run by benches/udp.py)"),
    }
}

/// A socket at `addr` with large buffers, its reads waiting at most 50 ms.
fn socket(addr: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(addr).expect("bind");
    for force in [true, false] {
        let done = if force {
            setsockopt(&socket.as_fd(), sockopt::RcvBufForce, &SOCKET_BUFFER).and(setsockopt(
                &socket.as_fd(),
                sockopt::SndBufForce,
                &SOCKET_BUFFER,
            ))
        } else {
            setsockopt(&socket.as_fd(), sockopt::RcvBuf, &SOCKET_BUFFER).and(setsockopt(
                &socket.as_fd(),
                sockopt::SndBuf,
                &SOCKET_BUFFER,
            ))
        };
        if done.is_ok() {
            break;
        }
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    socket
}

/// Reads datagrams in batches.
struct Reader {
    headers: MultiHeaders<SockaddrIn>,
    bufs: Vec<Vec<u8>>,
    /// The last batch: each datagram's length and sender.
    got: Vec<(usize, Option<SockaddrIn>)>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            headers: MultiHeaders::preallocate(BATCH, None),
            bufs: vec![vec![0; MAX]; BATCH],
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Waits for one datagram (at most the socket's read timeout), then takes what else is
    /// queued, up to a batch; how many.
    fn read(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let got = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        self.got.extend(got.map(|m| (m.bytes, m.address)));
        Ok(self.got.len())
    }

    /// Datagram `i` of the last batch.
    fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.got[i].0]
    }
}

fn echo(addr: SocketAddr) {
    let socket = socket(addr);
    println!("{}", socket.local_addr().expect("addr"));
    let _ = io::stdout().flush();
    let mut reader = Reader::new();
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    loop {
        let Ok(n) = reader.read(&socket) else {
            continue;
        };
        let slices: Vec<[IoSlice<'_>; 1]> =
            (0..n).map(|i| [IoSlice::new(reader.datagram(i))]).collect();
        let to: Vec<Option<SockaddrIn>> = reader.got.iter().map(|g| g.1).collect();
        let none: [ControlMessage<'_>; 0] = [];
        // A datagram not sent is the load's to send again.
        let _ = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter(),
            &to,
            none,
            MsgFlags::empty(),
        );
    }
}

/// The flows of one socket: flow `i` sends from its own loopback address.
struct Flows {
    socket: UdpSocket,
    target: SockaddrIn,
    from: Vec<libc::in_pktinfo>,
    seq: Vec<u32>,
    sent_at: Vec<Instant>,
    request: Vec<u8>,
}

impl Flows {
    fn new(target: SocketAddr, flows: usize, size: usize) -> Flows {
        let SocketAddr::V4(target) = target else {
            panic!("the target must be an IPv4 address");
        };
        let from = (0..flows)
            .map(|i| {
                let (third, fourth) = (i / 250, i % 250 + 1);
                let ip = Ipv4Addr::new(127, 10 + (third / 256) as u8, third as u8, fourth as u8);
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                }
            })
            .collect();
        // Every address of 127/8 is this host's, so the replies to them come to this socket.
        let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        Flows {
            socket: socket(any),
            target: SockaddrIn::from(target),
            from,
            seq: vec![0; flows],
            sent_at: vec![Instant::now(); flows],
            request: vec![7; size],
        }
    }

    /// Sends flow `i`'s next request.
    fn send(&mut self, i: usize) {
        self.seq[i] = self.seq[i].wrapping_add(1);
        self.request[..4].copy_from_slice(&(i as u32).to_le_bytes());
        self.request[4..8].copy_from_slice(&self.seq[i].to_le_bytes());
        self.sent_at[i] = Instant::now();
        let from = [ControlMessage::Ipv4PacketInfo(&self.from[i])];
        // A request not sent is sent again after RESEND.
        let _ = sendmsg(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&self.request)],
            &from,
            MsgFlags::empty(),
            Some(&self.target),
        );
    }

    /// The flow an answer is for, if it answers that flow's request in flight.
    fn answers(&self, datagram: &[u8]) -> Option<usize> {
        let id = u32::from_le_bytes(datagram.get(..4)?.try_into().ok()?) as usize;
        let seq = u32::from_le_bytes(datagram.get(4..8)?.try_into().ok()?);
        (self.seq.get(id) == Some(&seq)).then_some(id)
    }

    /// Sends again every request unanswered for RESEND; how many.
    fn resend_late(&mut self, answered: impl Fn(usize) -> bool) -> u64 {
        let now = Instant::now();
        let late: Vec<usize> = (0..self.seq.len())
            .filter(|&i| !answered(i) && now.duration_since(self.sent_at[i]) >= RESEND)
            .collect();
        for &i in &late {
            self.send(i);
        }
        late.len() as u64
    }
}

fn load(target: SocketAddr, flows: usize, size: usize, seconds: Duration) {
    let mut f = Flows::new(target, flows, size);
    let mut reader = Reader::new();
    let (mut answered, mut resent) = (0u64, 0u64);
    let start = Instant::now();
    for i in 0..flows {
        f.send(i);
    }
    let mut scanned = start;
    while start.elapsed() < seconds {
        if let Ok(n) = reader.read(&f.socket) {
            for k in 0..n {
                if let Some(i) = f.answers(reader.datagram(k)) {
                    answered += 1;
                    f.send(i);
                }
            }
        }
        if scanned.elapsed() >= RESEND / 4 {
            scanned = Instant::now();
            resent += f.resend_late(|_| false);
        }
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "{{\"answered_per_s\": {:.1}, \"answered\": {answered}, \"resent\": {resent}}}",
        answered as f64 / took
    );
}

fn hold(target: SocketAddr, flows: usize) {
    let mut f = Flows::new(target, flows, 8);
    let mut reader = Reader::new();
    let mut answered = vec![false; flows];
    let mut left = flows;
    for i in 0..flows {
        f.send(i);
    }
    let start = Instant::now();
    let mut scanned = start;
    while left > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{left} flows were never answered"
        );
        if let Ok(n) = reader.read(&f.socket) {
            for k in 0..n {
                if let Some(i) = f.answers(reader.datagram(k)) {
                    if !std::mem::replace(&mut answered[i], true) {
                        left -= 1;
                    }
                }
            }
        }
        if scanned.elapsed() >= RESEND / 4 {
            scanned = Instant::now();
            f.resend_late(|i| answered[i]);
        }
    }
    println!("ready");
    let _ = io::stdout().flush();
    // Held until whoever started this closes its stdin; the flows live in the proxy until
    // they idle out, so nothing is sent meanwhile.
    for _ in io::stdin().lock().lines() {}
}
