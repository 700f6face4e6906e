//! The in-process bus: which device is connected on which connection, who
//! follows whose presence, and the hand-off of freshly stored envelopes.

use palaver_messaging::{Notifier, StoredEnvelope};
use palaver_proto::frames::{LastSeenPrivacy, PresenceInfo};
use palaver_proto::{AccountId, DeviceId};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use tokio::sync::Notify;

const SHARDS: usize = 64;

/// Items queued for one connection beyond which envelopes are dropped from
/// the live path and the connection re-reads its queue from the store.
const MAX_PENDING: usize = 1024;

/// Something for a connection to send.
#[derive(Debug, Clone)]
pub enum Push {
    Envelope(Arc<StoredEnvelope>),
    Typing {
        from: AccountId,
        from_device: DeviceId,
        typing: bool,
    },
    Presence(PresenceInfo),
    /// Any other frame (call signalling).
    Frame(Arc<palaver_proto::frames::ServerFrame>),
}

/// Why a connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    Open = 0,
    /// The device was unlinked.
    Revoked = 1,
    /// The same device connected again elsewhere.
    Replaced = 2,
}

/// The part of a connection the router can reach. Holds no allocation
/// while idle: the queue is an empty `VecDeque`.
#[derive(Debug)]
pub struct Mailbox {
    pending: Mutex<VecDeque<Push>>,
    wake: Notify,
    lagged: AtomicBool,
    close: AtomicU8,
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            pending: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            lagged: AtomicBool::new(false),
            close: AtomicU8::new(CloseReason::Open as u8),
        }
    }
}

impl Mailbox {
    fn push(&self, item: Push) {
        {
            let mut q = self.pending.lock();
            if q.len() >= MAX_PENDING {
                if matches!(item, Push::Envelope(_)) {
                    self.lagged.store(true, Ordering::Release);
                }
            } else {
                q.push_back(item);
            }
        }
        self.wake.notify_one();
    }

    fn close(&self, reason: CloseReason) {
        self.close.store(reason as u8, Ordering::Release);
        self.wake.notify_one();
    }

    /// Waits until something is pending or the connection must close.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Takes everything pending.
    pub fn drain(&self, into: &mut Vec<Push>) {
        into.extend(self.pending.lock().drain(..));
    }

    /// True once if envelopes were dropped since the last call.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }

    /// Whether the connection must close, and why.
    pub fn close_reason(&self) -> CloseReason {
        match self.close.load(Ordering::Acquire) {
            1 => CloseReason::Revoked,
            2 => CloseReason::Replaced,
            _ => CloseReason::Open,
        }
    }
}

#[derive(Debug, Default)]
struct OnlineAccount {
    devices: Vec<(DeviceId, Arc<Mailbox>)>,
    privacy: LastSeenPrivacy,
}

#[derive(Debug, Default)]
struct Shard {
    devices: HashMap<DeviceId, Arc<Mailbox>>,
    accounts: HashMap<AccountId, OnlineAccount>,
    /// Followers of an account's presence: the follower's account and mailbox.
    watchers: HashMap<AccountId, Vec<(AccountId, Arc<Mailbox>)>>,
}

/// Connected devices and presence followers of this node.
#[derive(Debug)]
pub struct Router {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

fn shard_of(id: u64) -> usize {
    // Ids are sequential, so the low bits spread evenly.
    (id as usize) % SHARDS
}

/// What changed when a device connected or disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The account went online (first device) or offline (last device).
    Changed,
    Unchanged,
}

impl Router {
    /// Registers the live connection of a device. An earlier connection of
    /// the same device is told to close.
    pub fn connect(
        &self,
        account: AccountId,
        device: DeviceId,
        mailbox: &Arc<Mailbox>,
        privacy: LastSeenPrivacy,
    ) -> Transition {
        let old = self.shards[shard_of(device.0)]
            .lock()
            .devices
            .insert(device, mailbox.clone());
        if let Some(old) = old {
            old.close(CloseReason::Replaced);
        }
        let mut shard = self.shards[shard_of(account.0)].lock();
        let entry = shard.accounts.entry(account).or_default();
        entry.privacy = privacy;
        let was_online = !entry.devices.is_empty();
        entry.devices.retain(|(d, _)| *d != device);
        entry.devices.push((device, mailbox.clone()));
        if !was_online {
            Transition::Changed
        } else {
            Transition::Unchanged
        }
    }

    /// Removes a connection, if it is still the registered one.
    pub fn disconnect(
        &self,
        account: AccountId,
        device: DeviceId,
        mailbox: &Arc<Mailbox>,
    ) -> Transition {
        {
            let mut shard = self.shards[shard_of(device.0)].lock();
            if shard
                .devices
                .get(&device)
                .is_some_and(|m| Arc::ptr_eq(m, mailbox))
            {
                shard.devices.remove(&device);
            }
        }
        let mut shard = self.shards[shard_of(account.0)].lock();
        let Some(entry) = shard.accounts.get_mut(&account) else {
            return Transition::Unchanged;
        };
        let before = entry.devices.len();
        entry.devices.retain(|(_, m)| !Arc::ptr_eq(m, mailbox));
        if entry.devices.is_empty() {
            shard.accounts.remove(&account);
            if before > 0 {
                return Transition::Changed;
            }
        }
        Transition::Unchanged
    }

    /// Whether any device of the account is connected here.
    pub fn is_online(&self, account: AccountId) -> bool {
        self.shards[shard_of(account.0)]
            .lock()
            .accounts
            .contains_key(&account)
    }

    /// Updates the cached privacy setting of an online account.
    pub fn set_privacy(&self, account: AccountId, privacy: LastSeenPrivacy) {
        if let Some(entry) = self.shards[shard_of(account.0)]
            .lock()
            .accounts
            .get_mut(&account)
        {
            entry.privacy = privacy;
        }
    }

    /// Sends a typing indicator to the connected devices of `to`.
    pub fn typing(&self, from: AccountId, from_device: DeviceId, to: AccountId, typing: bool) {
        let shard = self.shards[shard_of(to.0)].lock();
        if let Some(entry) = shard.accounts.get(&to) {
            for (device, mailbox) in &entry.devices {
                if *device != from_device {
                    mailbox.push(Push::Typing {
                        from,
                        from_device,
                        typing,
                    });
                }
            }
        }
    }

    /// Follows the presence of `account` on `mailbox`, a connection of `follower`.
    pub fn watch(&self, account: AccountId, follower: AccountId, mailbox: &Arc<Mailbox>) {
        let mut shard = self.shards[shard_of(account.0)].lock();
        let list = shard.watchers.entry(account).or_default();
        if !list.iter().any(|(_, m)| Arc::ptr_eq(m, mailbox)) {
            list.push((follower, mailbox.clone()));
        }
    }

    /// Stops every connection of `follower` from following `account`.
    pub fn unwatch_by(&self, account: AccountId, follower: AccountId) {
        let mut shard = self.shards[shard_of(account.0)].lock();
        if let Some(list) = shard.watchers.get_mut(&account) {
            list.retain(|(f, _)| *f != follower);
            if list.is_empty() {
                shard.watchers.remove(&account);
            }
        }
    }

    /// Stops following `account` on `mailbox`.
    pub fn unwatch(&self, account: AccountId, mailbox: &Arc<Mailbox>) {
        let mut shard = self.shards[shard_of(account.0)].lock();
        if let Some(list) = shard.watchers.get_mut(&account) {
            list.retain(|(_, m)| !Arc::ptr_eq(m, mailbox));
            if list.is_empty() {
                shard.watchers.remove(&account);
            }
        }
    }

    /// Tells the followers of `account` that it went online or offline,
    /// unless the account hides its presence.
    pub fn announce(
        &self,
        account: AccountId,
        online: bool,
        last_seen: Option<u64>,
        privacy: LastSeenPrivacy,
    ) {
        if privacy == LastSeenPrivacy::Nobody {
            return;
        }
        let shard = self.shards[shard_of(account.0)].lock();
        if let Some(list) = shard.watchers.get(&account) {
            let info = PresenceInfo {
                account,
                online: Some(online),
                last_seen,
            };
            for (_, m) in list {
                m.push(Push::Presence(info.clone()));
            }
        }
    }

    /// Hands `push` to the connection of `device`, if it is connected here;
    /// false if it is not.
    pub fn deliver(&self, device: DeviceId, push: Push) -> bool {
        let mailbox = self.shards[shard_of(device.0)]
            .lock()
            .devices
            .get(&device)
            .cloned();
        match mailbox {
            Some(m) => {
                m.push(push);
                true
            }
            None => false,
        }
    }

    /// Whether `device` is connected to this node.
    pub fn has_device(&self, device: DeviceId) -> bool {
        self.shards[shard_of(device.0)]
            .lock()
            .devices
            .contains_key(&device)
    }

    /// Every account with devices connected here, with those devices.
    pub fn local_devices(&self) -> Vec<(AccountId, Vec<DeviceId>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock();
            out.extend(
                shard
                    .accounts
                    .iter()
                    .map(|(a, e)| (*a, e.devices.iter().map(|(d, _)| *d).collect())),
            );
        }
        out
    }

    /// The device connected on another node: its connection here closes.
    pub fn replaced_elsewhere(&self, device: DeviceId) {
        if let Some(m) = self.shards[shard_of(device.0)].lock().devices.get(&device) {
            m.close(CloseReason::Replaced);
        }
    }

    /// The devices of `account` connected to this node.
    pub fn connected_devices(&self, account: AccountId) -> Vec<DeviceId> {
        self.shards[shard_of(account.0)]
            .lock()
            .accounts
            .get(&account)
            .map(|a| a.devices.iter().map(|(d, _)| *d).collect())
            .unwrap_or_default()
    }

    /// Number of connected devices on this node.
    pub fn connected_device_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().devices.len()).sum()
    }
}

impl Notifier for Router {
    fn envelopes(&self, envelopes: &[Arc<StoredEnvelope>]) {
        for env in envelopes {
            let mailbox = self.shards[shard_of(env.device.0)]
                .lock()
                .devices
                .get(&env.device)
                .cloned();
            if let Some(m) = mailbox {
                m.push(Push::Envelope(env.clone()));
            }
        }
    }

    fn device_revoked(&self, device: DeviceId) {
        if let Some(m) = self.shards[shard_of(device.0)].lock().devices.get(&device) {
            m.close(CloseReason::Revoked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(m: &Mailbox) -> Vec<Push> {
        let mut v = Vec::new();
        m.drain(&mut v);
        v
    }

    #[test]
    fn presence_is_announced_only_when_visible() {
        let r = Router::default();
        let watcher = Arc::new(Mailbox::default());
        let (acc, dev) = (AccountId(7), DeviceId(70));
        r.watch(acc, AccountId(8), &watcher);
        let m = Arc::new(Mailbox::default());
        assert_eq!(
            r.connect(acc, dev, &m, LastSeenPrivacy::Everyone),
            Transition::Changed
        );
        r.announce(acc, true, None, LastSeenPrivacy::Everyone);
        assert!(matches!(drained(&watcher)[..], [Push::Presence(ref p)] if p.online == Some(true)));
        r.announce(acc, false, Some(5), LastSeenPrivacy::Nobody);
        assert!(drained(&watcher).is_empty());
        r.unwatch(acc, &watcher);
        r.announce(acc, false, Some(5), LastSeenPrivacy::Everyone);
        assert!(drained(&watcher).is_empty());
        r.watch(acc, AccountId(8), &watcher);
        r.unwatch_by(acc, AccountId(8));
        r.announce(acc, true, None, LastSeenPrivacy::Everyone);
        assert!(
            drained(&watcher).is_empty(),
            "a blocked follower stops following"
        );
    }

    #[test]
    fn second_device_connection_replaces_the_first() {
        let r = Router::default();
        let (acc, dev) = (AccountId(1), DeviceId(2));
        let first = Arc::new(Mailbox::default());
        let second = Arc::new(Mailbox::default());
        assert_eq!(
            r.connect(acc, dev, &first, LastSeenPrivacy::Everyone),
            Transition::Changed
        );
        assert_eq!(
            r.connect(acc, dev, &second, LastSeenPrivacy::Everyone),
            Transition::Unchanged
        );
        assert_eq!(first.close_reason(), CloseReason::Replaced);
        // The old connection leaving does not take the new one offline.
        assert_eq!(r.disconnect(acc, dev, &first), Transition::Unchanged);
        assert!(r.is_online(acc));
        assert_eq!(r.connected_device_count(), 1);
        assert_eq!(r.disconnect(acc, dev, &second), Transition::Changed);
        assert!(!r.is_online(acc));
    }

    #[test]
    fn a_full_mailbox_drops_envelopes_and_flags_lag() {
        let m = Mailbox::default();
        let env = Arc::new(StoredEnvelope {
            seq: palaver_proto::Seq(1),
            device: DeviceId(1),
            kind: palaver_proto::frames::EnvelopeKind::Message,
            from: AccountId(2),
            from_device: DeviceId(3),
            msg: palaver_proto::ClientMsgId::new("m").unwrap(),
            ts: 0,
            payload: None,
            group: None,
            ref_msg: None,
        });
        for _ in 0..MAX_PENDING + 10 {
            m.push(Push::Envelope(env.clone()));
        }
        assert_eq!(drained(&m).len(), MAX_PENDING);
        assert!(m.take_lagged());
        assert!(!m.take_lagged());
    }
}
