//! Control plane: STUN requests (Binding, Allocate, Refresh, CreatePermission,
//! ChannelBind), authentication and the answers.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::AddressFamily;
use stun_types::attribute::{
    ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Software, UnknownAttributes,
    Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, Message, MessageClass, MessageIntegrityCredentials, MessageType, MessageWriteVec,
};
use stun_types::prelude::*;
use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};

use super::state::{AllocPlan, Allocation, Auth, Bucket, Channel, Family, Reservation};
use super::*;
use crate::auth::LookupError;
use crate::ports::PortPool;

impl Engine {
    /// A request whose header parses but whose attributes do not gets 400.
    pub(super) fn answer_unparsable(&mut self, client: ClientAddr, buf: &[u8]) {
        let Ok(header) = stun_types::message::MessageHeader::from_bytes(buf) else {
            return;
        };
        let mtype = header.get_type();
        if mtype.class() != MessageClass::Request {
            return;
        }
        let err_type = MessageType::from_class_method(MessageClass::Error, mtype.method());
        let mut w = Message::builder(err_type, header.transaction_id(), MessageWriteVec::new());
        if let Ok(code) = ErrorCode::new(400, "Bad Request") {
            let _ = w.add_attribute(&code);
        }
        self.stats.bad_requests += 1;
        self.finish_reply(client, w, None);
    }

    pub(super) fn finish_reply(
        &mut self,
        client: ClientAddr,
        mut w: MessageWriteVec,
        auth: Option<&Auth>,
    ) {
        if let Ok(sw) = Software::new(&self.settings.software) {
            let _ = w.add_attribute(&sw);
        }
        if let Some(auth) = auth {
            let _ = w.add_message_integrity(&auth.creds, auth.algo);
        }
        let _ = w.add_fingerprint();
        self.out.push_back(Output::Transmit(Transmit {
            to: client,
            data: w.finish(),
        }));
    }

    pub(super) fn reply_error(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        code: u16,
        auth: Option<&Auth>,
    ) {
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(code, ErrorCode::default_reason_for_code(code)) {
            let _ = w.add_attribute(&attr);
        }
        if code == ErrorCode::BAD_REQUEST {
            self.stats.bad_requests += 1;
        }
        self.finish_reply(client, w, auth);
    }

    /// 401 or 438 with REALM and a fresh NONCE.
    pub(super) fn challenge(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        code: u16,
    ) {
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(code, ErrorCode::default_reason_for_code(code)) {
            let _ = w.add_attribute(&attr);
        }
        if let Ok(realm) = Realm::new(&self.settings.realm) {
            let _ = w.add_attribute(&realm);
        }
        let nonce = self.nonces.issue(self.secs(now));
        if let Ok(nonce) = Nonce::new(&nonce) {
            let _ = w.add_attribute(&nonce);
        }
        self.finish_reply(client, w, None);
    }

    pub(super) fn handle_request(&mut self, now: Instant, client: ClientAddr, msg: &Message<'_>) {
        self.last_now = self.last_now.max(now);
        if msg.has_method(BINDING) {
            return self.handle_binding(client, msg);
        }
        let known = [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND];
        if !known.iter().any(|m| msg.has_method(*m)) {
            return self.reply_error(client, msg, ErrorCode::BAD_REQUEST, None);
        }
        let Some(auth) = self.authenticate(now, client, msg) else {
            return;
        };
        if self.reject_unknown(client, msg, Some(&auth)) {
            return;
        }
        if msg.has_method(ALLOCATE) {
            self.handle_allocate(now, client, msg, auth);
            return;
        }
        let Some(&idx) = self.by_client.get(&client) else {
            return self.reply_error(client, msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
        };
        let (bound, same_user) = self.allocs[idx]
            .as_ref()
            .map_or((false, false), |a| (a.bound, a.username == auth.username));
        if !bound {
            return self.reply_error(client, msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
        }
        if !same_user {
            self.stats.auth_wrong_user += 1;
            return self.reply_error(client, msg, ErrorCode::WRONG_CREDENTIALS, Some(&auth));
        }
        if msg.has_method(REFRESH) {
            self.handle_refresh(now, client, msg, idx, &auth);
        } else if msg.has_method(CREATE_PERMISSION) {
            self.handle_create_permission(now, client, msg, idx, &auth);
        } else {
            self.handle_channel_bind(now, client, msg, idx, &auth);
        }
    }

    /// Answers 420 when the message carries comprehension-required
    /// attributes this server does not know. Returns whether it did.
    pub(super) fn reject_unknown(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: Option<&Auth>,
    ) -> bool {
        let unknown: Vec<_> = msg
            .iter_attributes()
            .map(|(_, a)| a.get_type())
            .filter(|t| t.comprehension_required() && !KNOWN.contains(t))
            .collect();
        if unknown.is_empty() {
            return false;
        }
        self.stats.unknown_attributes += 1;
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(420, "Unknown Attribute") {
            let _ = w.add_attribute(&attr);
        }
        let _ = w.add_attribute(&UnknownAttributes::new(&unknown));
        self.finish_reply(client, w, auth);
        true
    }

    pub(super) fn handle_binding(&mut self, client: ClientAddr, msg: &Message<'_>) {
        if self.reject_unknown(client, msg, None) {
            return;
        }
        self.stats.binding_requests += 1;
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let _ = w.add_attribute(&XorMappedAddress::new(client.remote, msg.transaction_id()));
        self.finish_reply(client, w, None);
    }

    /// Long-term credential check (RFC 8489 section 9.2.4). Answers and
    /// returns `None` when the request is not authenticated.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
    ) -> Option<Auth> {
        let has_integrity = msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE);
        if !has_integrity {
            self.stats.auth_challenges += 1;
            self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
            return None;
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            self.reply_error(client, msg, ErrorCode::BAD_REQUEST, None);
            return None;
        };
        if !self.nonces.is_valid(nonce.nonce(), self.secs(now)) {
            self.stats.auth_stale_nonce += 1;
            self.challenge(now, client, msg, ErrorCode::STALE_NONCE);
            return None;
        }
        if realm.realm() != self.settings.realm {
            self.stats.auth_bad_credentials += 1;
            self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
            return None;
        }
        let key = match self.creds.lookup(username.username(), self.unix(now)) {
            Ok(key) => key,
            Err(e) => {
                match e {
                    LookupError::UnknownUser => self.stats.auth_unknown_user += 1,
                    LookupError::Expired => self.stats.auth_expired += 1,
                }
                self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
                return None;
            }
        };
        let creds = MessageIntegrityCredentials::from(key);
        let Ok(algo) = msg.validate_integrity(&creds) else {
            self.stats.auth_bad_credentials += 1;
            self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
            return None;
        };
        Some(Auth {
            creds,
            algo,
            username: username.username().to_owned(),
        })
    }

    pub(super) fn clamp_lifetime(&self, requested: Option<u32>) -> u32 {
        let max = self.settings.max_lifetime;
        requested
            .unwrap_or(DEFAULT_LIFETIME)
            .max(DEFAULT_LIFETIME)
            .min(max)
    }

    pub(super) fn relay_ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.settings.relay_ipv4,
            Family::V6 => self.settings.relay_ipv6,
        }
    }

    pub(super) fn pool(&mut self, family: Family) -> &mut PortPool {
        match family {
            Family::V4 => &mut self.ports_v4,
            Family::V6 => &mut self.ports_v6,
        }
    }

    pub(super) fn handle_allocate(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: Auth,
    ) {
        if let Some(&idx) = self.by_client.get(&client) {
            let alloc = self.allocs[idx].as_ref();
            match alloc {
                Some(a) if a.txid == msg.transaction_id() => {
                    if a.bound {
                        let data = a.success.clone();
                        self.out
                            .push_back(Output::Transmit(Transmit { to: client, data }));
                    }
                }
                _ => self.reply_error(client, msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth)),
            }
            return;
        }
        match self.check_allocate(msg) {
            Ok(plan) => self.start_allocation(now, client, msg, auth, plan),
            Err(code) => self.reply_error(client, msg, code, Some(&auth)),
        }
    }

    /// Validates an Allocate's attributes (RFC 8656 section 7.2) and the quotas.
    pub(super) fn check_allocate(&mut self, msg: &Message<'_>) -> Result<AllocPlan, u16> {
        let transport = msg
            .attribute::<RequestedTransport>()
            .map_err(|_| ErrorCode::BAD_REQUEST)?;
        if transport.protocol() != RequestedTransport::UDP {
            return Err(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL);
        }
        let even = optional::<EvenPort>(msg)?;
        let token = optional::<ReservationToken>(msg)?;
        let requested = optional::<RequestedAddressFamily>(msg)?;
        let additional = optional::<AdditionalAddressFamily>(msg)?;
        let lifetime = optional::<Lifetime>(msg)?.map(|l| l.seconds());
        if token.is_some() && (even.is_some() || requested.is_some()) {
            return Err(ErrorCode::BAD_REQUEST);
        }
        if requested.is_some() && additional.is_some() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        if additional
            .as_ref()
            .is_some_and(|a| a.family() == AddressFamily::IPV4)
        {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let family = match requested.map(|r| r.family()) {
            Some(AddressFamily::IPV6) => Family::V6,
            _ => Family::V4,
        };
        if self.relay_ip(family).is_none() {
            return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
        }
        if self.by_client.len() >= self.settings.max_allocations {
            self.stats.quota_rejections += 1;
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        let plan = AllocPlan {
            family,
            even: even.is_some(),
            reserve_next: even.is_some_and(|e| e.requested()),
            token: token.map(|t| t.token()),
            lifetime: self.clamp_lifetime(lifetime),
            refuse_additional: additional.is_some(), // dual allocation is not implemented
        };
        Ok(plan)
    }

    pub(super) fn start_allocation(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: Auth,
        plan: AllocPlan,
    ) {
        let used = self.per_user.get(&auth.username).copied().unwrap_or(0);
        if used >= self.settings.max_per_user {
            self.stats.quota_rejections += 1;
            return self.reply_error(
                client,
                msg,
                ErrorCode::ALLOCATION_QUOTA_REACHED,
                Some(&auth),
            );
        }
        let relay = match plan.token {
            Some(token) => self.take_reservation(now, token),
            None => self.pick_port(plan.family, plan.even, plan.reserve_next),
        };
        let Some(relay) = relay else {
            self.stats.quota_rejections += 1;
            return self.reply_error(client, msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
        };
        let request = BindRequest(self.rng.next());
        let rate = self.settings.rate;
        let alloc = Allocation {
            client,
            username: auth.username.clone(),
            creds: auth.creds,
            algo: auth.algo,
            family: plan.family,
            relay,
            bound: false,
            bind_request: request,
            bind_attempts: 1,
            expires: now + Duration::from_secs(u64::from(plan.lifetime)),
            lifetime: plan.lifetime,
            txid: msg.transaction_id(),
            success: Vec::new(),
            reserve_next: plan.reserve_next,
            refuse_additional: plan.refuse_additional,
            perms: Vec::new(),
            channels: Vec::new(),
            up: Bucket::new(now, rate),
            down: Bucket::new(now, rate),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.allocs[i] = Some(alloc);
                i
            }
            None => {
                self.allocs.push(Some(alloc));
                self.allocs.len() - 1
            }
        };
        *self.per_user.entry(auth.username).or_insert(0) += 1;
        self.by_client.insert(client, idx);
        self.pending.insert(request, idx);
        self.wake_at(now + Duration::from_secs(u64::from(plan.lifetime)));
        self.out.push_back(Output::BindRelay {
            request,
            addr: relay,
        });
    }

    pub(super) fn pick_port(
        &mut self,
        family: Family,
        even: bool,
        reserve_next: bool,
    ) -> Option<SocketAddr> {
        let ip = self.relay_ip(family)?;
        let start = self.rng.next();
        let port = self.pool(family).take(start, even, reserve_next)?;
        Some(SocketAddr::new(ip, port))
    }

    pub(super) fn take_reservation(&mut self, now: Instant, token: u64) -> Option<SocketAddr> {
        let r = self.reservations.remove(&token)?;
        if r.expires <= now {
            let family = Family::of(&r.relay);
            self.pool(family).release(r.relay.port());
            return None;
        }
        Some(r.relay)
    }

    /// The driver's answer to [`Output::BindRelay`]: `Ok(addr)` when the
    /// relay socket is bound to `addr`, `Err(())` when binding failed.
    pub fn relay_bound(
        &mut self,
        now: Instant,
        request: BindRequest,
        result: Result<SocketAddr, ()>,
    ) {
        let Some(idx) = self.pending.remove(&request) else {
            if let Ok(addr) = result {
                self.out.push_back(Output::ReleaseRelay { addr });
            }
            return;
        };
        match result {
            Ok(addr) => self.allocation_bound(now, idx, addr),
            Err(()) => self.retry_bind(idx),
        }
    }

    pub(super) fn retry_bind(&mut self, idx: usize) {
        let Some(alloc) = self.allocs[idx].as_ref() else {
            return;
        };
        let (family, attempts, reserve) = (alloc.family, alloc.bind_attempts, alloc.reserve_next);
        // The failed port stays marked as used: something else holds it.
        let next = if attempts < BIND_ATTEMPTS {
            self.pick_port(family, reserve, reserve)
        } else {
            None
        };
        let Some(addr) = next else {
            self.stats.quota_rejections += 1;
            return self.fail_allocation(idx);
        };
        let request = BindRequest(self.rng.next());
        if let Some(alloc) = self.allocs[idx].as_mut() {
            alloc.relay = addr;
            alloc.bind_attempts += 1;
            alloc.bind_request = request;
        }
        self.pending.insert(request, idx);
        self.out.push_back(Output::BindRelay { request, addr });
    }

    /// No relay socket could be bound: answer 508 and forget the allocation.
    pub(super) fn fail_allocation(&mut self, idx: usize) {
        let Some(alloc) = self.remove_allocation(idx) else {
            return;
        };
        let mtype = MessageType::from_class_method(MessageClass::Error, ALLOCATE);
        let mut w = Message::builder(mtype, alloc.txid, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(508, "Insufficient Capacity") {
            let _ = w.add_attribute(&attr);
        }
        let auth = Auth {
            creds: alloc.creds,
            algo: alloc.algo,
            username: alloc.username,
        };
        self.finish_reply(alloc.client, w, Some(&auth));
    }

    pub(super) fn allocation_bound(&mut self, now: Instant, idx: usize, addr: SocketAddr) {
        let token = {
            let Some(alloc) = self.allocs[idx].as_ref() else {
                return;
            };
            alloc.reserve_next.then(|| self.rng.next())
        };
        if let Some(token) = token {
            let relay = SocketAddr::new(addr.ip(), addr.port() + 1);
            let expires = now + RESERVATION_LIFETIME;
            self.reservations
                .insert(token, Reservation { relay, expires });
            self.wake_at(expires);
        }
        let software = self.settings.software.clone();
        let external = match Family::of(&addr) {
            Family::V4 => self.settings.external_ipv4,
            Family::V6 => self.settings.external_ipv6,
        };
        let announced = SocketAddr::new(external.unwrap_or(addr.ip()), addr.port());
        let Some(alloc) = self.allocs[idx].as_mut() else {
            return;
        };
        alloc.bound = true;
        alloc.relay = addr;
        let mtype = MessageType::from_class_method(MessageClass::Success, ALLOCATE);
        let mut w = Message::builder(mtype, alloc.txid, MessageWriteVec::new());
        let _ = w.add_attribute(&XorRelayedAddress::new(announced, alloc.txid));
        let _ = w.add_attribute(&Lifetime::new(alloc.lifetime));
        let _ = w.add_attribute(&XorMappedAddress::new(alloc.client.remote, alloc.txid));
        if let Some(token) = token {
            let _ = w.add_attribute(&ReservationToken::new(token));
        }
        if let (true, Ok(code)) = (
            alloc.refuse_additional,
            ErrorCode::new(440, "Address Family not Supported"),
        ) {
            let _ = w.add_attribute(&AddressErrorCode::new(AddressFamily::IPV6, code));
        }
        if let Ok(sw) = Software::new(&software) {
            let _ = w.add_attribute(&sw);
        }
        let _ = w.add_message_integrity(&alloc.creds, alloc.algo);
        let _ = w.add_fingerprint();
        alloc.success = w.finish();
        let (client, data) = (alloc.client, alloc.success.clone());
        tracing::info!(
            user = user_part(&alloc.username),
            client = %redact(client.remote.ip()),
            transport = ?client.transport,
            relay_port = addr.port(),
            lifetime = alloc.lifetime,
            "allocation created"
        );
        self.by_relay.insert(addr, idx);
        self.stats.allocations_created += 1;
        self.out
            .push_back(Output::Transmit(Transmit { to: client, data }));
    }

    pub(super) fn remove_allocation(&mut self, idx: usize) -> Option<Allocation> {
        let alloc = self.allocs.get_mut(idx)?.take()?;
        self.free.push(idx);
        self.by_client.remove(&alloc.client);
        if alloc.bound {
            self.by_relay.remove(&alloc.relay);
            self.out
                .push_back(Output::ReleaseRelay { addr: alloc.relay });
        } else {
            self.pending.remove(&alloc.bind_request);
        }
        self.pool(alloc.family).release(alloc.relay.port());
        if let Some(n) = self.per_user.get_mut(&alloc.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&alloc.username);
            }
        }
        Some(alloc)
    }

    pub(super) fn delete_allocation(&mut self, idx: usize, why: &'static str) {
        if let Some(alloc) = self.remove_allocation(idx) {
            self.stats.allocations_deleted += 1;
            tracing::info!(
                user = user_part(&alloc.username),
                client = %redact(alloc.client.remote.ip()),
                relay_port = alloc.relay.port(),
                why,
                "allocation deleted"
            );
        }
    }

    pub(super) fn handle_refresh(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        idx: usize,
        auth: &Auth,
    ) {
        let requested = match optional::<Lifetime>(msg) {
            Ok(l) => l.map(|l| l.seconds()),
            Err(code) => return self.reply_error(client, msg, code, Some(auth)),
        };
        if let Ok(family) = msg.attribute::<RequestedAddressFamily>() {
            let matches = self.allocs[idx].as_ref().is_some_and(|a| {
                (a.family == Family::V4) == (family.family() == AddressFamily::IPV4)
            });
            if !matches {
                return self.reply_error(
                    client,
                    msg,
                    ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                    Some(auth),
                );
            }
        }
        let lifetime = if requested == Some(0) {
            self.delete_allocation(idx, "refresh with lifetime 0");
            0
        } else {
            let lifetime = self.clamp_lifetime(requested);
            let expires = now + Duration::from_secs(u64::from(lifetime));
            if let Some(a) = self.allocs[idx].as_mut() {
                a.expires = expires;
            }
            lifetime
        };
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let _ = w.add_attribute(&Lifetime::new(lifetime));
        self.finish_reply(client, w, Some(auth));
    }

    /// Checks a peer address against the allocation's family and the policy.
    pub(super) fn check_peer(&mut self, idx: usize, peer: SocketAddr) -> Result<(), u16> {
        let family = self.allocs[idx].as_ref().map(|a| a.family);
        if family != Some(Family::of(&peer)) {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if let Err(reason) = self.policy.check(peer.ip()) {
            self.stats.peer_denied += 1;
            tracing::debug!(?reason, "peer address refused");
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    pub(super) fn peer_addresses(msg: &Message<'_>) -> Result<Vec<SocketAddr>, u16> {
        let mut peers = Vec::new();
        for n in 0.. {
            match msg.nth_attribute::<XorPeerAddress>(n) {
                Ok(p) => peers.push(p.addr(msg.transaction_id())),
                Err(stun_types::message::StunParseError::MissingAttribute(_)) => break,
                Err(_) => return Err(ErrorCode::BAD_REQUEST),
            }
        }
        if peers.is_empty() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        Ok(peers)
    }

    pub(super) fn handle_create_permission(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        idx: usize,
        auth: &Auth,
    ) {
        let peers = match Self::peer_addresses(msg) {
            Ok(p) => p,
            Err(code) => return self.reply_error(client, msg, code, Some(auth)),
        };
        for peer in &peers {
            if let Err(code) = self.check_peer(idx, *peer) {
                return self.reply_error(client, msg, code, Some(auth));
            }
        }
        if let Some(a) = self.allocs[idx].as_mut() {
            for peer in &peers {
                a.permit(peer.ip(), now);
            }
        }
        self.wake_at(now + PERMISSION_LIFETIME);
        let w = Message::builder_success(msg, MessageWriteVec::new());
        self.finish_reply(client, w, Some(auth));
    }

    pub(super) fn handle_channel_bind(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        idx: usize,
        auth: &Auth,
    ) {
        let result = self.check_channel_bind(now, msg, idx);
        match result {
            Ok(()) => {
                self.wake_at(now + PERMISSION_LIFETIME);
                let w = Message::builder_success(msg, MessageWriteVec::new());
                self.finish_reply(client, w, Some(auth));
            }
            Err(code) => self.reply_error(client, msg, code, Some(auth)),
        }
    }

    pub(super) fn check_channel_bind(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        idx: usize,
    ) -> Result<(), u16> {
        let number = msg
            .attribute::<ChannelNumber>()
            .map_err(|_| ErrorCode::BAD_REQUEST)?
            .channel();
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| ErrorCode::BAD_REQUEST)?
            .addr(msg.transaction_id());
        if !(0x4000..=self.settings.max_channel).contains(&number) {
            self.stats.bad_channel += 1;
            return Err(ErrorCode::BAD_REQUEST);
        }
        self.check_peer(idx, peer)?;
        let alloc = self.allocs[idx]
            .as_mut()
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        let by_number = alloc.channels.iter().position(|c| c.number == number);
        let by_peer = alloc.channels.iter().position(|c| c.peer == peer);
        let expires = now + CHANNEL_LIFETIME;
        match (by_number, by_peer) {
            (Some(a), Some(b)) if a == b => alloc.channels[a].expires = expires,
            (None, None) => alloc.channels.push(Channel {
                number,
                peer,
                expires,
            }),
            _ => {
                self.stats.bad_channel += 1;
                return Err(ErrorCode::BAD_REQUEST);
            }
        }
        alloc.permit(peer.ip(), now);
        Ok(())
    }
}

/// An attribute that may be absent: `Ok(None)` when it is, 400 when it is
/// present but malformed.
fn optional<'a, A>(msg: &'a Message<'_>) -> Result<Option<A>, u16>
where
    A: stun_types::attribute::AttributeFromRaw<'a> + stun_types::attribute::AttributeStaticType,
{
    match msg.attribute::<A>() {
        Ok(a) => Ok(Some(a)),
        Err(stun_types::message::StunParseError::MissingAttribute(_)) => Ok(None),
        Err(_) => Err(ErrorCode::BAD_REQUEST),
    }
}
