//! Raw netfilter netlink plumbing, for every subsystem weft speaks (nf_tables, ctnetlink):
//! the socket, message/attribute encoding and decoding, the batch framing nf_tables
//! requires for every change, single requests, dumps, and reply collection.
//!
//! Everything here is hand-rolled on purpose: the plugin runs per pod and must not pull in
//! libnftnl (C) or spawn `nft`. The wire layout mirrors what `nft --debug=mnl` emits.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::Error;

// --- netlink / nfnetlink constants (linux/netlink.h, linux/netfilter/nfnetlink.h) ---------
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x001;
const NLM_F_MULTI: u16 = 0x002;
pub const NLM_F_ACK: u16 = 0x004;
const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;

const NLA_F_NESTED: u16 = 0x8000;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// Address family in nfgenmsg: `inet` tables see both IPv4 and IPv6.
pub const NFPROTO_INET: u8 = 1;

/// The messages weft sends: nf_tables ones, and ctnetlink's (`Ct*`). On the wire the
/// subsystem is the high byte of nlmsg_type, the message the low byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    NewTable,
    DelTable,
    NewChain,
    DelChain,
    NewRule,
    GetRule,
    NewSet,
    GetSet,
    DelSet,
    NewSetElem,
    GetSetElem,
    DelSetElem,
    /// `IPCTNL_MSG_CT_NEW` without `NLM_F_CREATE`: changes an existing entry.
    CtUpdate,
    /// `IPCTNL_MSG_CT_GET`: with `NLM_F_DUMP`, every conntrack entry.
    CtGet,
    /// `IPCTNL_MSG_CT_DELETE`: one conntrack entry.
    CtDelete,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::NewTable => "NEWTABLE",
            Op::DelTable => "DELTABLE",
            Op::NewChain => "NEWCHAIN",
            Op::DelChain => "DELCHAIN",
            Op::DelSet => "DELSET",
            Op::NewRule => "NEWRULE",
            Op::GetRule => "GETRULE",
            Op::GetSet => "GETSET",
            Op::NewSet => "NEWSET",
            Op::NewSetElem => "NEWSETELEM",
            Op::GetSetElem => "GETSETELEM",
            Op::DelSetElem => "DELSETELEM",
            Op::CtUpdate => "CT_NEW",
            Op::CtGet => "CT_GET",
            Op::CtDelete => "CT_DELETE",
        }
    }

    fn msg_type(self) -> u16 {
        // linux/netfilter/nf_tables.h (enum nf_tables_msg_types) and
        // linux/netfilter/nfnetlink_conntrack.h (enum cntl_msg_types).
        let (subsystem, msg) = match self {
            Op::NewTable => (NFNL_SUBSYS_NFTABLES, 0),
            Op::DelTable => (NFNL_SUBSYS_NFTABLES, 2),
            Op::NewChain => (NFNL_SUBSYS_NFTABLES, 3),
            Op::DelChain => (NFNL_SUBSYS_NFTABLES, 5),
            Op::NewRule => (NFNL_SUBSYS_NFTABLES, 6),
            Op::GetRule => (NFNL_SUBSYS_NFTABLES, 7),
            Op::NewSet => (NFNL_SUBSYS_NFTABLES, 9),
            Op::GetSet => (NFNL_SUBSYS_NFTABLES, 10),
            Op::DelSet => (NFNL_SUBSYS_NFTABLES, 11),
            Op::NewSetElem => (NFNL_SUBSYS_NFTABLES, 12),
            Op::GetSetElem => (NFNL_SUBSYS_NFTABLES, 13),
            Op::DelSetElem => (NFNL_SUBSYS_NFTABLES, 14),
            Op::CtUpdate => (NFNL_SUBSYS_CTNETLINK, 0),
            Op::CtGet => (NFNL_SUBSYS_CTNETLINK, 1),
            Op::CtDelete => (NFNL_SUBSYS_CTNETLINK, 2),
        };
        (subsystem << 8) | msg
    }

    /// The error for the kernel's refusal of this message: callers tell nf_tables and
    /// conntrack failures apart by variant.
    fn refused(self, errno: Errno, context: String) -> Error {
        let op = self.name();
        match self {
            Op::CtUpdate | Op::CtGet | Op::CtDelete => Error::Conntrack { op, errno, context },
            _ => Error::Kernel { op, errno, context },
        }
    }
}

// --- attribute writer ----------------------------------------------------------------------

/// Appends netlink attributes (TLVs, 4-byte aligned) to a message buffer.
pub struct Attrs<'a> {
    buf: &'a mut Vec<u8>,
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl Attrs<'_> {
    pub fn bytes(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len())
            .expect("attributes are bounded: names validated, elements chunked");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad4(self.buf);
        self
    }

    /// nf_tables keeps all its integer attributes in network byte order.
    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// Strings are NUL-terminated on the wire (NLA_STRING with the kernel's nla_strcmp).
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v)
    }

    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Attrs<'_>)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        f(&mut Attrs { buf: self.buf });
        let len = u16::try_from(self.buf.len() - start)
            .expect("nests are bounded: names validated, elements chunked");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }
}

fn push_header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by finish_msg
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0 = let the kernel fill it in
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

fn finish_msg(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

// --- batch -----------------------------------------------------------------------------------

/// A transaction: BATCH_BEGIN, the messages, BATCH_END. The kernel applies it atomically
/// (under the per-netns nf_tables commit mutex) or not at all. Sequence numbers are stamped
/// in by [`Socket::transact`], so a batch can be built while the socket runs dumps.
pub struct Batch {
    buf: Vec<u8>,
    /// Header offset, operation and human context of every message (all request an ACK).
    msgs: Vec<(usize, Op, String)>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        let mut buf = Vec::with_capacity(2048);
        // res_id of the batch messages names the subsystem, big-endian (as nft sends it).
        let s = push_header(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        finish_msg(&mut buf, s);
        Batch {
            buf,
            msgs: Vec::new(),
        }
    }

    /// Add one message; `context` names the object for error reports.
    pub fn msg(&mut self, op: Op, flags: u16, context: String, f: impl FnOnce(&mut Attrs<'_>)) {
        let flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        let s = push_header(&mut self.buf, op.msg_type(), flags, 0, NFPROTO_INET, 0);
        f(&mut Attrs { buf: &mut self.buf });
        finish_msg(&mut self.buf, s);
        self.msgs.push((s, op, context));
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.msgs.len()
    }

    /// The encoded messages so far (BATCH_BEGIN first; BATCH_END is added when sent).
    #[cfg(test)]
    pub(crate) fn wire(&self) -> &[u8] {
        &self.buf
    }
}

fn set_seq(buf: &mut [u8], hdr: usize, seq: u32) {
    buf[hdr + 8..hdr + 12].copy_from_slice(&seq.to_ne_bytes());
}

// --- parsed replies -------------------------------------------------------------------------

/// One attribute of a received message.
pub struct Attr<'a> {
    pub ty: u16,
    pub data: &'a [u8],
}

/// Iterate the attributes in `buf`; malformed tails are reported, not skipped silently.
pub fn parse_attrs(mut buf: &[u8]) -> Result<Vec<Attr<'_>>, Error> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & !(NLA_F_NESTED | 0x4000);
        if len < 4 || len > buf.len() {
            return Err(Error::protocol(format!("bad attribute length {len}")));
        }
        out.push(Attr {
            ty,
            data: &buf[4..len],
        });
        let adv = (len + 3) & !3;
        buf = if adv >= buf.len() { &[] } else { &buf[adv..] };
    }
    Ok(out)
}

pub fn be32(data: &[u8]) -> Result<u32, Error> {
    let b: [u8; 4] = data
        .try_into()
        .map_err(|_| Error::protocol(format!("expected 4-byte u32, got {} bytes", data.len())))?;
    Ok(u32::from_be_bytes(b))
}

struct RawMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn split_msgs(mut buf: &[u8]) -> Result<Vec<RawMsg<'_>>, Error> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(Error::protocol(format!("bad netlink message length {len}")));
        }
        out.push(RawMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes")),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        let adv = (len + 3) & !3;
        buf = if adv >= buf.len() { &[] } else { &buf[adv..] };
    }
    Ok(out)
}

/// NLMSG_ERROR payload: negative errno (0 = ACK) followed by the offending header.
fn error_code(payload: &[u8]) -> Result<i32, Error> {
    let b: [u8; 4] = payload
        .get(0..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::protocol("truncated NLMSG_ERROR"))?;
    Ok(-i32::from_ne_bytes(b))
}

// --- socket ---------------------------------------------------------------------------------

/// A netfilter netlink socket: the only one weft opens, for nf_tables batches and dumps and
/// for ctnetlink's requests and dumps alike. Sockets belong to the network namespace of the
/// thread that creates them, so callers open one per operation on their own thread.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open() -> Result<Socket, Error> {
        // SAFETY: plain socket(2); the result is checked before being wrapped.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_nl is valid; pid 0 asks the kernel to assign our port id.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a properly sized sockaddr_nl.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // Errors then carry only the failing message's header, not the whole request back;
        // best effort (old kernels lack it and we parse either form).
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_CAP_ACK,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Socket {
            fd,
            seq: 1,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A batch is one datagram, which must fit the socket's send buffer (netlink answers
    /// EMSGSIZE otherwise). Grow it for large batches, as nft does; best effort: if both
    /// calls fail the send reports the error.
    fn fit_send_buffer(&self, len: usize) {
        const DEFAULT_FITS: usize = 128 * 1024;
        if len <= DEFAULT_FITS {
            return;
        }
        self.grow_buffer(
            [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF],
            len.saturating_mul(2),
        );
    }

    /// Every message of a batch asks for an ACK, and the kernel queues them all on this
    /// socket before our send() returns: past the default receive buffer (~200 KiB, a few
    /// hundred ACKs at their ~700-byte skb truesize) the rest are dropped and the socket
    /// reports ENOBUFS, as a plan of thousands of sets did. Room for every ACK, as nft sizes
    /// its own receive buffer by the number of commands; best effort, like the send side.
    fn fit_receive_buffer(&self, messages: usize) {
        const ACK_TRUESIZE: usize = 1024;
        const DEFAULT_FITS: usize = 128;
        if messages <= DEFAULT_FITS {
            return;
        }
        self.grow_buffer(
            [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF],
            messages.saturating_mul(ACK_TRUESIZE),
        );
    }

    /// Sets the first of `opts` the kernel accepts (the FORCE variant needs CAP_NET_ADMIN,
    /// which weft has; the plain one is capped at the sysctl maximum).
    fn grow_buffer(&self, opts: [libc::c_int; 2], bytes: usize) {
        let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        for opt in opts {
            // SAFETY: setsockopt with a c_int option value.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                return;
            }
        }
    }

    fn send(&self, data: &[u8]) -> Result<(), Error> {
        // SAFETY: data is a valid slice; unconnected netlink sockets send to the kernel.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if n as usize != data.len() {
            return Err(Error::protocol(format!(
                "short netlink send: {n} of {}",
                data.len()
            )));
        }
        Ok(())
    }

    /// Receive one datagram. `Ok(None)` when `nonblock` and nothing is queued.
    fn recv(&mut self, nonblock: bool) -> Result<Option<usize>, Error> {
        let flags = libc::MSG_TRUNC | if nonblock { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: buf is a valid writable buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) if nonblock => return Ok(None),
                    _ => return Err(e.into()),
                }
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(Error::protocol(format!(
                    "netlink reply truncated ({n} bytes)"
                )));
            }
            return Ok(Some(n));
        }
    }

    /// Send a batch and collect one ACK or error per message. Returns the error of the
    /// earliest failing message: later ones are usually knock-on failures of the same abort.
    pub fn transact(&mut self, batch: Batch) -> Result<(), Error> {
        let Batch { mut buf, msgs } = batch;
        let first_seq = self.seq;
        set_seq(&mut buf, 0, first_seq);
        let mut ops: HashMap<u32, (Op, String)> = HashMap::with_capacity(msgs.len());
        for (i, (hdr, op, ctx)) in msgs.into_iter().enumerate() {
            let seq = first_seq + 1 + i as u32;
            set_seq(&mut buf, hdr, seq);
            ops.insert(seq, (op, ctx));
        }
        let end_seq = first_seq + 1 + ops.len() as u32;
        let e = push_header(
            &mut buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end_seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        finish_msg(&mut buf, e);
        self.seq = end_seq + 1;
        self.fit_send_buffer(buf.len());
        self.fit_receive_buffer(ops.len());
        self.send(&buf)?;
        let mut remaining: HashSet<u32> = ops.keys().copied().collect();
        let mut failures: Vec<(u32, i32)> = Vec::new();
        // The kernel processes the whole batch inside our send() and queues every ACK/error
        // before returning, and it keeps going after a failure so each message gets a reply.
        // Block until each message is accounted for, but once an error has been seen only
        // drain what is queued, so a framing error (one reply for the whole batch) cannot
        // hang the caller.
        while !remaining.is_empty() {
            let Some(n) = self.recv(!failures.is_empty())? else {
                break;
            };
            for m in split_msgs(&self.buf[..n])? {
                if m.ty != NLMSG_ERROR || m.seq < first_seq || m.seq > end_seq {
                    continue; // not a reply to this batch
                }
                let code = error_code(m.payload)?;
                remaining.remove(&m.seq);
                if code != 0 {
                    failures.push((m.seq, code));
                }
            }
        }
        if let Some(&(seq, code)) = failures.iter().min_by_key(|f| f.0) {
            let errno = Errno::from_raw(code);
            return Err(match ops.get(&seq) {
                Some((op, ctx)) => op.refused(errno, ctx.clone()),
                None => Error::Kernel {
                    op: "BATCH",
                    errno,
                    context: "batch framing".to_string(),
                },
            });
        }
        if !remaining.is_empty() {
            return Err(Error::protocol(format!(
                "batch finished with {} unacknowledged messages",
                remaining.len()
            )));
        }
        Ok(())
    }

    /// Run a dump request on `inet` tables (nf_tables) and hand every reply message's
    /// attributes (after nfgenmsg) to `f`.
    pub fn dump(
        &mut self,
        op: Op,
        context: &str,
        build: impl FnOnce(&mut Attrs<'_>),
        f: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.dump_family(op, NFPROTO_INET, context, build, f)
    }

    /// [`Socket::dump`] with the nfgenmsg family given: ctnetlink filters a dump by it
    /// (`AF_UNSPEC`: every family).
    pub fn dump_family(
        &mut self,
        op: Op,
        family: u8,
        context: &str,
        build: impl FnOnce(&mut Attrs<'_>),
        mut f: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let seq = self.send_one(op, NLM_F_REQUEST | NLM_F_DUMP, family, build)?;
        loop {
            let Some(n) = self.recv(false)? else { continue };
            let buf = std::mem::take(&mut self.buf);
            let res = (|| {
                for m in split_msgs(&buf[..n])? {
                    if m.seq != seq {
                        continue;
                    }
                    match m.ty {
                        NLMSG_DONE => return Ok(true),
                        NLMSG_ERROR => {
                            let code = error_code(m.payload)?;
                            if code == 0 {
                                return Ok(true);
                            }
                            return Err(op.refused(Errno::from_raw(code), context.to_string()));
                        }
                        _ => {
                            let p = m
                                .payload
                                .get(NFGENMSG_LEN..)
                                .ok_or_else(|| Error::protocol("reply shorter than nfgenmsg"))?;
                            f(p)?;
                            if m.flags & NLM_F_MULTI == 0 {
                                return Ok(true);
                            }
                        }
                    }
                }
                Ok(false)
            })();
            self.buf = buf;
            if res? {
                return Ok(());
            }
        }
    }

    /// Builds one message (not a batch) with the next sequence number and sends it; returns
    /// that sequence number, which its replies carry.
    fn send_one(
        &mut self,
        op: Op,
        flags: u16,
        family: u8,
        build: impl FnOnce(&mut Attrs<'_>),
    ) -> Result<u32, Error> {
        let seq = self.seq;
        self.seq += 1;
        let mut req = Vec::with_capacity(256);
        let s = push_header(&mut req, op.msg_type(), flags, seq, family, 0);
        build(&mut Attrs { buf: &mut req });
        finish_msg(&mut req, s);
        self.send(&req)?;
        Ok(seq)
    }

    /// Send one message on its own, outside a batch (ctnetlink takes no batches), and wait
    /// for its ACK: `Ok` when the kernel did it, its refusal otherwise.
    pub fn request(
        &mut self,
        op: Op,
        family: u8,
        context: &str,
        build: impl FnOnce(&mut Attrs<'_>),
    ) -> Result<(), Error> {
        let seq = self.send_one(op, NLM_F_REQUEST | NLM_F_ACK, family, build)?;
        loop {
            let Some(n) = self.recv(false)? else { continue };
            for m in split_msgs(&self.buf[..n])? {
                // Anything else queued (a late reply to an earlier request) is not ours.
                if m.seq != seq || m.ty != NLMSG_ERROR {
                    continue;
                }
                return match error_code(m.payload)? {
                    0 => Ok(()),
                    code => Err(op.refused(Errno::from_raw(code), context.to_string())),
                };
            }
        }
    }
}

#[cfg(test)]
impl<'a> Attrs<'a> {
    /// A writer appending to `buf`, for tests that build attributes outside a message.
    pub(crate) fn on(buf: &'a mut Vec<u8>) -> Attrs<'a> {
        Attrs { buf }
    }
}
