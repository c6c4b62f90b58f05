//! Socket options, in one place: listener backlog and address reuse, TCP_NODELAY, resets (on
//! close, and once a node has acknowledged everything).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

/// Accept queue length asked of the kernel (capped by `net.core.somaxconn`). While tierlb is
/// at its connection limit or out of descriptors, clients wait here rather than being refused.
pub const BACKLOG: i32 = 4096;

/// Binds a listening socket with SO_REUSEADDR, so a restart does not wait out TIME_WAIT, and
/// TCP_NODELAY, which Linux copies to every accepted socket (see [`prepare_client`]).
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_std_listener(addr, BACKLOG)?)
}

/// The non-blocking listening socket of [`bind_listener`], with an accept queue of `backlog`,
/// not yet registered with a runtime.
pub fn bind_std_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A non-blocking socket for connecting to a node, with TCP_NODELAY set before the connect so
/// the connected stream needs no further system call. With a `source` address it is bound to
/// it with IP_BIND_ADDRESS_NO_PORT, so the kernel picks the local port at connect time, for
/// the whole 4-tuple: a port in use towards one node stays free towards every other.
pub fn node_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        #[cfg(target_os = "linux")]
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(io::Error::from)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    Ok(socket)
}

/// Connects `socket` (from [`node_socket`]) to `addr`. The outcome is read from the readiness
/// event itself: a failed connect is reported with EPOLLERR/EPOLLHUP (write side closed), and
/// only then is SO_ERROR read for the reason; a connect that succeeded costs no `getsockopt`
/// (tokio's own connect reads SO_ERROR every time).
pub async fn connect(socket: Socket, addr: SocketAddr) -> io::Result<TcpStream> {
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let ready = stream.ready(Interest::WRITABLE).await?;
    if ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionReset.into()));
    }
    Ok(stream)
}

/// Makes sure an accepted client has TCP_NODELAY: tierlb forwards what it reads at once, so
/// Nagle's delay would only add latency. On Linux an accepted socket inherits it from the
/// listener, which saves a system call per connection; elsewhere it is set here.
pub fn prepare_client(stream: &TcpStream) -> io::Result<()> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        stream.set_nodelay(true)
    }
}

/// Caps the kernel's send buffer of `stream` at about `bytes` (the kernel doubles it for its
/// bookkeeping), so that a peer that does not read stalls the writer after that much, instead
/// of after the megabytes that autotuning would queue.
pub fn cap_send_buffer(stream: &TcpStream, bytes: usize) {
    if let Err(e) = SockRef::from(stream).set_send_buffer_size(bytes) {
        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
    }
}

/// Makes the next close of `stream` send a reset instead of a FIN (SO_LINGER with zero time),
/// used to pass a reset from one side of a spliced connection on to the other.
pub fn reset_on_close(stream: &TcpStream) {
    if let Err(e) = SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(error = %e, "cannot set SO_LINGER to pass a reset on");
    }
}

/// Bytes given to `stream` that its peer has not acknowledged yet (unsent or in flight: the
/// SIOCOUTQ ioctl). A queue that shrinks tells that the peer keeps taking bytes, which is
/// how the `response` watch tells a slow reader from a silent node; elsewhere than Linux it
/// is always 0 (no such progress is seen).
#[allow(unsafe_code)]
pub fn unacknowledged(stream: &TcpStream) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::{AsFd, AsRawFd};
        let mut queued: libc::c_int = 0;
        let fd = stream.as_fd();
        // SAFETY: `fd` is borrowed from a live TCP socket for the duration of the call, and
        // SIOCOUTQ (TIOCOUTQ's number) writes one c_int through the pointer, which points to
        // `queued` on the stack.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if rc == 0 {
            Ok(u64::try_from(queued).unwrap_or(0))
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        Ok(0)
    }
}

/// Whether an error means this process (not a peer) is out of a resource: descriptors,
/// buffers or memory. Such an error is never blamed on a node, and the accept loop backs
/// off on it instead of spinning.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether a connect error is this host's own failure rather than the node's: resource
/// exhaustion (see [`is_resource_exhaustion`]), or no free local port to connect from
/// (EADDRNOTAVAIL, and EADDRINUSE from the port search).
pub fn is_local_failure(e: &io::Error) -> bool {
    is_resource_exhaustion(e)
        || matches!(
            e.raw_os_error(),
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_clients_have_nodelay() {
        let listener = bind_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        prepare_client(&accepted).expect("prepare");
        assert!(accepted.nodelay().expect("nodelay"));
    }

    #[tokio::test]
    async fn node_sockets_have_nodelay() {
        let listener = bind_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let socket = node_socket(addr, None).expect("socket");
        let stream = connect(socket, addr).await.expect("connect");
        assert!(stream.nodelay().expect("nodelay"));
    }

    #[tokio::test]
    async fn a_refused_connect_reports_the_refusal() {
        // Bound but not listening: the port stays taken, and connects to it are refused.
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let bound = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        bound.bind(&any.into()).expect("bind");
        let addr = bound
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("local addr");
        let socket = node_socket(addr, None).expect("socket");
        let refused = connect(socket, addr).await.expect_err("nobody listens");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
