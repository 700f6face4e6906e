//! Batched UDP I/O: `recvmmsg` (through nix) and `sendmmsg` (through rustix),
//! so one system call moves several datagrams and a drained socket is known
//! without an extra `EAGAIN` call.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};

use crate::engine::PEER_HEADROOM;

/// Datagrams per system call.
pub(super) const BATCH: usize = 32;
/// One receive slot: headroom for a ChannelData header, then the largest datagram.
const SLOT: usize = PEER_HEADROOM + 65_536;

/// Receive slots for up to [`BATCH`] datagrams.
pub(super) struct RxBatch {
    bufs: Vec<u8>,
    /// One set of headers per address family: the kernel shortens each
    /// header's address length to what it wrote, and nix does not reset it,
    /// so headers used for IPv4 would truncate IPv6 source addresses.
    headers_v4: MultiHeaders<SockaddrStorage>,
    headers_v6: MultiHeaders<SockaddrStorage>,
    meta: [(usize, Option<SocketAddr>); BATCH],
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

impl RxBatch {
    pub(super) fn new() -> Self {
        RxBatch {
            bufs: vec![0; BATCH * SLOT],
            headers_v4: MultiHeaders::preallocate(BATCH, None),
            headers_v6: MultiHeaders::preallocate(BATCH, None),
            meta: [(0, None); BATCH],
        }
    }

    /// Receives what `socket` has, up to [`BATCH`] datagrams; `Ok(0)` when it
    /// has nothing. Fewer than [`BATCH`] means the socket is drained.
    pub(super) fn recv(&mut self, socket: &impl AsRawFd, ipv6: bool) -> io::Result<usize> {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .chunks_mut(SLOT)
            .map(|slot| [IoSliceMut::new(&mut slot[PEER_HEADROOM..])])
            .collect();
        let flags = MsgFlags::MSG_DONTWAIT;
        let headers = if ipv6 {
            &mut self.headers_v6
        } else {
            &mut self.headers_v4
        };
        match recvmmsg(socket.as_raw_fd(), headers, iovs.iter_mut(), flags, None) {
            Ok(results) => {
                let mut n = 0;
                for (meta, r) in self.meta.iter_mut().zip(results) {
                    *meta = (r.bytes, r.address.as_ref().and_then(to_std));
                    n += 1;
                }
                Ok(n)
            }
            Err(nix::errno::Errno::EAGAIN) => Ok(0),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Length and source of datagram `i` of the last [`RxBatch::recv`].
    pub(super) fn meta(&self, i: usize) -> (usize, Option<SocketAddr>) {
        self.meta[i]
    }

    /// Datagram `i` with [`PEER_HEADROOM`] free bytes in front of it.
    pub(super) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * SLOT..(i + 1) * SLOT]
    }

    /// The payload of datagram `i`.
    pub(super) fn payload(&self, i: usize, len: usize) -> &[u8] {
        let start = i * SLOT + PEER_HEADROOM;
        &self.bufs[start..start + len]
    }
}

/// Datagrams queued for one socket, sent with `sendmmsg` on [`TxBatch::flush`].
pub(super) struct TxBatch {
    arena: Vec<u8>,
    items: Vec<(usize, usize, SocketAddrAny)>,
}

impl TxBatch {
    pub(super) fn new() -> Self {
        TxBatch {
            arena: Vec::with_capacity(BATCH * 2048),
            items: Vec::with_capacity(BATCH),
        }
    }

    /// Queues `data` for `to`; sends the queue first when it is full.
    pub(super) fn push(&mut self, socket: &impl AsFd, to: SocketAddr, data: &[u8]) {
        if self.items.len() == BATCH {
            self.flush(socket);
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        self.items.push((start, data.len(), to.into()));
    }

    /// Sends everything queued. Like `send_to` on UDP, a datagram the kernel
    /// refuses is dropped.
    pub(super) fn flush(&mut self, socket: &impl AsFd) {
        if self.items.is_empty() {
            return;
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = self
            .items
            .iter()
            .map(|(start, len, _)| [IoSlice::new(&self.arena[*start..start + len])])
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..iovs.len())
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<MMsgHdr<'_>> = self
            .items
            .iter()
            .zip(&iovs)
            .zip(controls.iter_mut())
            .map(|(((_, _, addr), iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            match sendmmsg(socket, &mut msgs[sent..], SendFlags::DONTWAIT) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => sent += 1,
            }
        }
        drop(msgs);
        self.items.clear();
        self.arena.clear();
    }
}
