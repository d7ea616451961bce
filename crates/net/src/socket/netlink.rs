//! Request/ACK and dump loops over one blocking NETLINK_ROUTE socket.
//!
//! The wire rules this enforces: every request carries a fresh sequence number and replies
//! with another sequence number are leftovers of an abandoned exchange and are skipped; a
//! datagram can hold many messages; a dump ends only at NLMSG_DONE; an `NLMSG_ERROR` with
//! code 0 is the ACK. A dump the kernel marks `NLM_F_DUMP_INTR` (the table changed under
//! it) is thrown away and asked again, as is one whose datagram did not fit the buffer.

use std::io;

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};

/// Big enough for any rtnetlink dump datagram the kernel builds for us (it caps them at
/// 32 KiB unless a single object is larger); a larger one grows the buffer and retries.
const RECV_BUF: usize = 64 * 1024;
const DUMP_ATTEMPTS: usize = 5;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

/// What an operation is called in errors, and which errnos mean "that object is gone".
#[derive(Clone, Copy)]
pub(crate) struct Op<'a> {
    pub name: &'static str,
    pub context: &'a str,
    pub gone: &'a [i32],
}

impl<'a> Op<'a> {
    pub fn new(name: &'static str, context: &'a str) -> Op<'a> {
        Op {
            name,
            context,
            gone: &[],
        }
    }

    pub fn gone(mut self, errnos: &'a [i32]) -> Op<'a> {
        self.gone = errnos;
        self
    }

    fn error(&self, errno: i32, ext_ack: Option<String>) -> Error {
        Error::from_errno(self.name, self.context, errno, ext_ack, self.gone)
    }

    fn io(&self, what: &str, e: io::Error) -> Error {
        Error::io(format!("{} {}: {what}", self.name, self.context), e)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ends at the ACK (or NACK).
    Ack,
    /// Ends at the single reply object (or NACK).
    Get,
    /// Ends at NLMSG_DONE (or NACK).
    Dump,
}

enum Exchange {
    Done(Vec<RouteNetlinkMessage>),
    /// The result is not trustworthy and the (read-only) request may simply be repeated.
    Retry(&'static str),
}

pub(crate) struct Netlink {
    socket: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
    send_buf: Vec<u8>,
}

impl Netlink {
    /// Opens and binds a socket in the calling thread's current network namespace; it
    /// stays bound to that namespace for its whole life.
    pub fn new() -> Result<Netlink> {
        let op = Op::new("netlink", "socket");
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| op.io("socket", e))?;
        let addr = socket.bind_auto().map_err(|e| op.io("bind", e))?;
        // Errors echo only the header, not our whole request, and carry the kernel's
        // explanation text; strict checking makes the kernel honour dump filters.
        socket
            .set_cap_ack(true)
            .map_err(|e| op.io("NETLINK_CAP_ACK", e))?;
        socket
            .set_ext_ack(true)
            .map_err(|e| op.io("NETLINK_EXT_ACK", e))?;
        socket
            .set_netlink_get_strict_chk(true)
            .map_err(|e| op.io("NETLINK_GET_STRICT_CHK", e))?;
        Ok(Netlink {
            socket,
            port: addr.port_number(),
            // Any start works; a varying one makes replies to a previous process that
            // happened to get the same port id impossible to confuse with ours.
            seq: std::process::id().wrapping_mul(7919),
            buf: Vec::with_capacity(RECV_BUF),
            send_buf: Vec::new(),
        })
    }

    /// Sends a change request (`flags` beyond REQUEST|ACK, e.g. CREATE|EXCL) and waits
    /// for its ACK.
    pub fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16, op: Op<'_>) -> Result<()> {
        match self.exchange(&msg, NLM_F_REQUEST | NLM_F_ACK | flags, Mode::Ack, op)? {
            Exchange::Done(_) => Ok(()),
            Exchange::Retry(why) => Err(Error::protocol(format!(
                "{} {}: {why}",
                op.name, op.context
            ))),
        }
    }

    /// [`Netlink::ack`] that also returns what the kernel sent before the ACK — with
    /// NLM_F_ECHO in `flags`, the created object as the kernel reports it.
    pub fn ack_collect(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: Op<'_>,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        match self.exchange(&msg, NLM_F_REQUEST | NLM_F_ACK | flags, Mode::Ack, op)? {
            Exchange::Done(msgs) => Ok(msgs),
            Exchange::Retry(why) => Err(Error::protocol(format!(
                "{} {}: {why}",
                op.name, op.context
            ))),
        }
    }

    /// Asks for one object. `Ok(None)` when the kernel says it does not exist (one of
    /// `op.gone` or ENODEV).
    pub fn get(
        &mut self,
        msg: RouteNetlinkMessage,
        op: Op<'_>,
    ) -> Result<Option<RouteNetlinkMessage>> {
        let reply = self.retrying(&msg, NLM_F_REQUEST, Mode::Get, op);
        match reply {
            Ok(mut msgs) => Ok(msgs.pop()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Dumps a table, repeating the dump if the kernel reports it was interrupted.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: Op<'_>,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.retrying(&msg, NLM_F_REQUEST | NLM_F_DUMP, Mode::Dump, op)
    }

    fn retrying(
        &mut self,
        msg: &RouteNetlinkMessage,
        flags: u16,
        mode: Mode,
        op: Op<'_>,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut last = "";
        for _ in 0..DUMP_ATTEMPTS {
            match self.exchange(msg, flags, mode, op)? {
                Exchange::Done(msgs) => return Ok(msgs),
                Exchange::Retry(why) => last = why,
            }
        }
        Err(Error::protocol(format!(
            "{} {}: gave up after {DUMP_ATTEMPTS} attempts: {last}",
            op.name, op.context
        )))
    }

    fn exchange(
        &mut self,
        msg: &RouteNetlinkMessage,
        flags: u16,
        mode: Mode,
        op: Op<'_>,
    ) -> Result<Exchange> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(msg, flags, seq, op)?;

        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let truncated = self.recv(op)?;
            if truncated {
                // The tail of this datagram is lost; only a fresh request can recover.
                return Ok(Exchange::Retry("reply larger than the receive buffer"));
            }
            let mut offset = 0;
            while offset < self.buf.len() {
                let bytes = &self.buf[offset..];
                let nl = NetlinkBuffer::new_checked(bytes).map_err(|e| {
                    Error::protocol(format!("{} {}: bad header: {e}", op.name, op.context))
                })?;
                let len = nl.length() as usize;
                let (msg_seq, msg_port, msg_flags) =
                    (nl.sequence_number(), nl.port_number(), nl.flags());
                offset += align4(len).max(NLMSG_HDRLEN);
                if msg_seq != seq || (msg_port != self.port && msg_port != 0) {
                    continue;
                }
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                    .map_err(|e| {
                        Error::protocol(format!("{} {}: bad reply: {e}", op.name, op.context))
                    })?;
                if msg_flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match parsed.payload {
                    NetlinkPayload::Error(err) => {
                        let code = err.raw_code();
                        if code == 0 {
                            return Ok(Exchange::Done(out));
                        }
                        let ext = ext_ack_message(&err.header, msg_flags);
                        return Err(op.error(-code, ext));
                    }
                    NetlinkPayload::Done(done) => {
                        if done.code != 0 {
                            return Err(op.error(-done.code, None));
                        }
                        if interrupted {
                            return Ok(Exchange::Retry("dump interrupted (NLM_F_DUMP_INTR)"));
                        }
                        return Ok(Exchange::Done(out));
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        out.push(inner);
                        if mode == Mode::Get {
                            return Ok(Exchange::Done(out));
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Ok(Exchange::Retry("kernel reported overrun"));
                    }
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, msg: &RouteNetlinkMessage, flags: u16, seq: u32, op: Op<'_>) -> Result<()> {
        let len = NLMSG_HDRLEN + msg.buffer_len();
        let mut header = NetlinkHeader::default();
        header.length = u32::try_from(len).map_err(|_| {
            Error::protocol(format!("{} {}: request too large", op.name, op.context))
        })?;
        header.message_type = msg.message_type();
        header.flags = flags;
        header.sequence_number = seq;
        self.send_buf.clear();
        self.send_buf.resize(len, 0);
        header.emit(&mut self.send_buf[..NLMSG_HDRLEN]);
        msg.emit(&mut self.send_buf[NLMSG_HDRLEN..]);
        loop {
            match self.socket.send(&self.send_buf, 0) {
                Ok(n) if n == self.send_buf.len() => return Ok(()),
                Ok(n) => {
                    return Err(Error::protocol(format!(
                        "{} {}: short send ({n} of {} bytes)",
                        op.name,
                        op.context,
                        self.send_buf.len()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(op.io("send", e)),
            }
        }
    }

    /// Reads one datagram into `self.buf`; true when it did not fit.
    fn recv(&mut self, op: Op<'_>) -> Result<bool> {
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    self.buf.clear();
                    self.buf.reserve(n.next_power_of_two());
                    return Ok(true);
                }
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(op.io("recv", e)),
            }
        }
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Pulls the kernel's human-readable reason out of an extended ACK. The error payload is
/// the echoed request header (only the header: NETLINK_CAP_ACK is on) followed by TLVs.
fn ext_ack_message(echo: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let orig = NetlinkBuffer::new_checked(echo).ok()?;
        align4(orig.length() as usize)
    };
    let tlvs = echo.get(skip..)?;
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let text = nla.value().split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    None
}
