//! The handover's wire: a `SOCK_SEQPACKET` Unix socket on an abstract name (Linux), so each
//! message keeps its bounds and carries its descriptors (`SCM_RIGHTS`) with it. The old
//! process sends its sockets in batches, each line of a batch naming the role and configured
//! address of the descriptor at the same place; then `end`. The new process answers `ready`
//! once it serves, or closes the socket (by exiting) when it cannot.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Descriptors per message (the kernel takes at most 253).
const BATCH: usize = 64;
/// The largest message: a batch of lines, each a role and an address.
const MESSAGE: usize = 64 * 1024;
/// The line that ends the sockets.
const END: &str = "end";
/// What the new process says once it serves.
pub const READY: &str = "ready";

/// A socket handed over: what it is for (`service`, `admin`, `gossip`), the address its
/// configuration asked for, and the descriptor.
#[derive(Debug)]
pub struct Entry {
    /// The role, one word.
    pub role: String,
    /// The configured address, as the configuration wrote it (port 0 included).
    pub configured: String,
    /// The socket.
    pub fd: OwnedFd,
}

/// A seqpacket socket, close-on-exec.
fn seqpacket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// The abstract address `name`.
fn address(name: &str) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(name.as_bytes())?)
}

/// Listens on the abstract name `name`.
pub fn listen(name: &str) -> io::Result<OwnedFd> {
    let socket = seqpacket()?;
    rustix::net::bind(&socket, &address(name)?)?;
    rustix::net::listen(&socket, 1)?;
    Ok(socket)
}

/// Connects to the abstract name `name`, reads waiting at most `timeout` each.
pub fn connect(name: &str, timeout: Duration) -> io::Result<OwnedFd> {
    let socket = seqpacket()?;
    rustix::net::connect(&socket, &address(name)?)?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(timeout),
    )?;
    Ok(socket)
}

/// Waits at most `timeout` for `fd` to be readable; whether it is.
pub fn readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::time::Timespec::try_from(timeout).map_err(io::Error::other)?;
    Ok(rustix::event::poll(&mut fds, Some(&timeout))? > 0)
}

/// Accepts one connection on `listener`, with the process ID of its peer.
pub fn accept(listener: impl AsFd) -> io::Result<(OwnedFd, i32)> {
    let conn = rustix::net::accept_with(listener, SocketFlags::CLOEXEC)?;
    let peer = rustix::net::sockopt::socket_peercred(&conn)?;
    Ok((conn, peer.pid.as_raw_nonzero().get()))
}

/// Sends `entries` on `conn`, then the end.
pub fn send(conn: impl AsFd, entries: &[(String, String, OwnedFd)]) -> io::Result<()> {
    for batch in entries.chunks(BATCH) {
        let text: String = batch
            .iter()
            .map(|(role, configured, _)| format!("{role} {configured}\n"))
            .collect();
        let fds: Vec<_> = batch.iter().map(|(_, _, fd)| fd.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        let iov = [IoSlice::new(text.as_bytes())];
        rustix::net::sendmsg(&conn, &iov, &mut control, SendFlags::NOSIGNAL)?;
    }
    say(conn, END)
}

/// Sends one line of text.
pub fn say(conn: impl AsFd, line: &str) -> io::Result<()> {
    rustix::net::send(&conn, line.as_bytes(), SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Reads one message: its text and the descriptors it carried. Empty text: the peer closed.
fn receive_one(conn: impl AsFd) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let got = rustix::net::recvmsg(&conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.flags.contains(rustix::net::ReturnFlags::TRUNC)
        || got.flags.contains(rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(io::Error::other("a handover message was cut short"));
    }
    let text = String::from_utf8(buf[..got.bytes].to_vec())
        .map_err(|_| io::Error::other("a handover message is not text"))?;
    Ok((text, fds))
}

/// Reads the sockets sent by [`send`], up to its end.
pub fn receive(conn: impl AsFd) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    loop {
        let (text, fds) = receive_one(&conn)?;
        if text.is_empty() {
            return Err(io::Error::other("the old process closed the handover"));
        }
        if text == END {
            return Ok(entries);
        }
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() != fds.len() {
            return Err(io::Error::other(format!(
                "a handover message names {} sockets and carries {}",
                lines.len(),
                fds.len()
            )));
        }
        for (line, fd) in lines.into_iter().zip(fds) {
            let (role, configured) = line
                .split_once(' ')
                .ok_or_else(|| io::Error::other(format!("a handover line is malformed: {line}")))?;
            entries.push(Entry {
                role: role.to_owned(),
                configured: configured.to_owned(),
                fd,
            });
        }
    }
}

/// Reads one line of text (a [`READY`]); empty when the peer closed.
pub fn hear(conn: impl AsFd) -> io::Result<String> {
    Ok(receive_one(conn)?.0)
}
