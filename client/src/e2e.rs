//! End-to-end encryption on vodozemac: an Olm session per pair of devices
//! for 1:1 messages and for handing out group keys, a Megolm session per
//! group for group messages. The server stores and forwards ciphertext only.
//!
//! Keys: the device's Olm identity (Curve25519 + Ed25519) is published with
//! its fallback key as the signed prekey and a batch of one-time keys.
//! Bundles claimed from the directory are checked here, on the client: the
//! signed prekey must carry a valid signature by the bundle's signing key,
//! and a device's identity key is pinned the first time it is seen.
//!
//! Payload format (JSON, the bytes the server sees): `{"e2e":"olm",
//! "sender_key", "kind", "body"}` for Olm, `{"e2e":"megolm", "session_id",
//! "body"}` for group messages; bodies are base64.
//!
//! Persistence: [`Crypto::save`] gives the whole state (account, Olm and
//! Megolm sessions, pinned identities) as text whose secret parts are
//! encrypted with a 32-byte key the application keeps (for example in the
//! platform's key store); [`Crypto::restore`] reads it back.
//!
//! Not done: cross-signing and verification of safety numbers.

use crate::{Client, Envelope, Error as ClientError, Sent};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use palaver_proto::frames::{EnvelopeKind, Payload};
use palaver_proto::keys::prekey_signature_message;
use palaver_proto::keys::{KeyBundle, KeyUpload, OneTimeKey, SignedKey, SignedKeyKind};
use palaver_proto::{AccountId, ClientMsgId, DeviceId, ErrorCode, GroupId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use vodozemac::megolm::{GroupSession, InboundGroupSession, MegolmMessage, SessionKey};
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};

pub use vodozemac;

/// What can go wrong while encrypting or decrypting.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("device {0} published a bundle whose signature does not verify")]
    BadBundle(DeviceId),
    #[error("device {0} has no published keys")]
    NoKeys(DeviceId),
    #[error("the identity key of device {0} changed")]
    IdentityChanged(DeviceId),
    #[error("not an end-to-end encrypted payload: {0}")]
    Malformed(String),
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    #[error("no session key for group session {0}")]
    UnknownGroupSession(String),
    #[error("the recipient's devices kept changing; retry")]
    DevicesChanging,
    #[error("saved state cannot be read (wrong key or damaged): {0}")]
    Restore(String),
}

pub type Result<T> = std::result::Result<T, E2eError>;

#[derive(Serialize, Deserialize)]
#[serde(tag = "e2e", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    Olm {
        sender_key: String,
        kind: usize,
        body: String,
    },
    Megolm {
        session_id: String,
        body: String,
    },
}

/// What travels inside an Olm message.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
enum Inner {
    Message { body: String },
    GroupKey { group: GroupId, session_key: String },
}

/// The result of decrypting an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decrypted {
    /// A message for the application.
    Message(Vec<u8>),
    /// A group key was received and stored; nothing to show.
    GroupKey(GroupId),
}

struct Outbound {
    session: GroupSession,
    /// The devices the session key was given to.
    shared_with: BTreeSet<DeviceId>,
}

/// One device's end-to-end state.
pub struct Crypto {
    account: Account,
    me: Option<(AccountId, DeviceId)>,
    next_key_id: u32,
    published: bool,
    identities: HashMap<DeviceId, Curve25519PublicKey>,
    sessions: HashMap<DeviceId, Vec<Session>>,
    outbound: HashMap<GroupId, Outbound>,
    inbound: HashMap<String, (GroupId, InboundGroupSession)>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("identity", &self.account.curve25519_key().to_base64())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Default for Crypto {
    fn default() -> Self {
        Self::new()
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(s)
        .map_err(|_| E2eError::Malformed("bad base64".into()))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serializes")
}

impl Crypto {
    /// A fresh device identity.
    pub fn new() -> Self {
        Crypto {
            account: Account::new(),
            me: None,
            next_key_id: 1,
            published: false,
            identities: HashMap::new(),
            sessions: HashMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
        }
    }

    /// This device's Curve25519 identity key.
    pub fn identity_key(&self) -> [u8; 32] {
        self.account.curve25519_key().to_bytes()
    }

    fn signed(&self, kind: SignedKeyKind, key_id: u32, public: &Curve25519PublicKey) -> SignedKey {
        let message = prekey_signature_message(kind, key_id, public.as_bytes());
        SignedKey {
            key_id,
            public: Payload(public.to_vec()),
            signature: Payload(self.account.sign(message.as_bytes()).to_bytes().to_vec()),
        }
    }

    /// Publishes the identity (and, the first time, the signed prekey) and
    /// `one_time` new one-time keys. Returns the stock on the server.
    pub async fn publish(&mut self, client: &mut Client, one_time: usize) -> Result<u32> {
        self.me = client.me();
        let signed_prekey = if self.published {
            None
        } else {
            self.account.generate_fallback_key();
            let fallback = self.account.fallback_key();
            let key = fallback
                .values()
                .next()
                .copied()
                .expect("a fallback key was just made");
            let id = self.take_key_id();
            Some(self.signed(SignedKeyKind::SignedPrekey, id, &key))
        };
        self.account.generate_one_time_keys(one_time);
        let mut one_time_keys = Vec::new();
        for key in self.account.one_time_keys().into_values() {
            let key_id = self.take_key_id();
            one_time_keys.push(OneTimeKey {
                key_id,
                public: Payload(key.to_vec()),
            });
        }
        let identity = self.account.identity_keys();
        let upload = KeyUpload {
            identity_key: Payload(identity.curve25519.to_vec()),
            signing_key: Payload(identity.ed25519.as_bytes().to_vec()),
            signed_prekey,
            one_time_keys,
            last_resort: None,
        };
        let stock = client.keys_upload(upload).await?;
        self.account.mark_keys_as_published();
        self.published = true;
        Ok(stock)
    }

    fn take_key_id(&mut self) -> u32 {
        let id = self.next_key_id;
        self.next_key_id += 1;
        id
    }

    /// Checks a claimed bundle and opens an outbound session with it.
    fn open(&mut self, bundle: &KeyBundle) -> Result<()> {
        let device = bundle.device;
        let bad = || E2eError::BadBundle(device);
        let signing = <&[u8; 32]>::try_from(bundle.signing_key.0.as_slice()).map_err(|_| bad())?;
        let signing = Ed25519PublicKey::from_slice(signing).map_err(|_| bad())?;
        let identity =
            Curve25519PublicKey::from_slice(&bundle.identity_key.0).map_err(|_| bad())?;
        let spk = &bundle.signed_prekey;
        let prekey = Curve25519PublicKey::from_slice(&spk.public.0).map_err(|_| bad())?;
        let signature = Ed25519Signature::from_slice(&spk.signature.0).map_err(|_| bad())?;
        let message =
            prekey_signature_message(SignedKeyKind::SignedPrekey, spk.key_id, &spk.public.0);
        signing
            .verify(message.as_bytes(), &signature)
            .map_err(|_| bad())?;
        self.pin(device, identity)?;
        let one_time = match &bundle.one_time_key {
            Some(k) => Curve25519PublicKey::from_slice(&k.public.0).map_err(|_| bad())?,
            None => prekey,
        };
        let session = self
            .account
            .create_outbound_session(SessionConfig::version_1(), identity, one_time)
            .map_err(|_| bad())?;
        self.sessions.entry(device).or_default().insert(0, session);
        Ok(())
    }

    fn pin(&mut self, device: DeviceId, key: Curve25519PublicKey) -> Result<()> {
        match self.identities.get(&device) {
            Some(k) if *k != key => Err(E2eError::IdentityChanged(device)),
            _ => {
                self.identities.insert(device, key);
                Ok(())
            }
        }
    }

    /// Makes sure there is a session with every device of `devices`.
    async fn ensure_sessions(
        &mut self,
        client: &mut Client,
        account: AccountId,
        devices: &[DeviceId],
    ) -> Result<()> {
        if devices.iter().all(|d| self.sessions.contains_key(d)) {
            return Ok(());
        }
        let claimed = client.keys_claim(account, None).await?;
        for bundle in &claimed.bundles {
            if devices.contains(&bundle.device) && !self.sessions.contains_key(&bundle.device) {
                self.open(bundle)?;
            }
        }
        match devices.iter().find(|d| !self.sessions.contains_key(d)) {
            Some(d) => Err(E2eError::NoKeys(*d)),
            None => Ok(()),
        }
    }

    fn olm_encrypt(&mut self, device: DeviceId, inner: &Inner) -> Vec<u8> {
        let session = &mut self.sessions.get_mut(&device).expect("session ensured")[0];
        let (kind, body) = session
            .encrypt(json(inner))
            .expect("a fresh or established session encrypts")
            .to_parts();
        json(&Wire::Olm {
            sender_key: self.account.curve25519_key().to_base64(),
            kind,
            body: b64(&body),
        })
    }

    /// One ciphertext of `plaintext` per device a send to `to` must cover:
    /// `to`'s devices and this account's other devices.
    pub async fn encrypt_for(
        &mut self,
        client: &mut Client,
        to: AccountId,
        plaintext: &[u8],
    ) -> Result<Vec<(DeviceId, Vec<u8>)>> {
        let inner = Inner::Message {
            body: b64(plaintext),
        };
        self.encrypt_inner(client, to, &inner).await
    }

    async fn encrypt_inner(
        &mut self,
        client: &mut Client,
        to: AccountId,
        inner: &Inner,
    ) -> Result<Vec<(DeviceId, Vec<u8>)>> {
        let (my_account, my_device) = client
            .me()
            .ok_or_else(|| E2eError::Malformed("authenticate before encrypting".into()))?;
        let mut targets = Vec::new();
        for account in [to, my_account] {
            let devices: Vec<DeviceId> = client
                .devices(account)
                .await?
                .into_iter()
                .filter(|d| *d != my_device)
                .collect();
            self.ensure_sessions(client, account, &devices).await?;
            targets.extend(devices);
            if to == my_account {
                break;
            }
        }
        Ok(targets
            .into_iter()
            .map(|d| (d, self.olm_encrypt(d, inner)))
            .collect())
    }

    /// Encrypts and sends a 1:1 message, refreshing the device lists and
    /// retrying when the server answers `mismatched_devices`.
    pub async fn send(
        &mut self,
        client: &mut Client,
        to: AccountId,
        msg: &ClientMsgId,
        plaintext: &[u8],
    ) -> Result<Sent> {
        let inner = Inner::Message {
            body: b64(plaintext),
        };
        self.send_inner(client, to, msg, &inner).await
    }

    async fn send_inner(
        &mut self,
        client: &mut Client,
        to: AccountId,
        msg: &ClientMsgId,
        inner: &Inner,
    ) -> Result<Sent> {
        for _ in 0..3 {
            let envelopes = self.encrypt_inner(client, to, inner).await?;
            match client.send(to, msg, envelopes).await {
                Err(e) if e.code() == Some(ErrorCode::MismatchedDevices) => continue,
                other => return Ok(other?),
            }
        }
        Err(E2eError::DevicesChanging)
    }

    /// Encrypts a group message with this device's Megolm session for the
    /// group, first handing a new session key to every member device when
    /// the membership changed (so removed members cannot read what follows).
    pub async fn group_send(
        &mut self,
        client: &mut Client,
        group: GroupId,
        msg: &ClientMsgId,
        plaintext: &[u8],
    ) -> Result<Sent> {
        let info = client.group_get(group).await?;
        let (_, my_device) = client
            .me()
            .ok_or_else(|| E2eError::Malformed("authenticate before encrypting".into()))?;
        let mut devices = BTreeSet::new();
        for m in &info.members {
            devices.extend(client.devices(m.account).await?);
        }
        devices.remove(&my_device);
        let fresh = match self.outbound.get(&group) {
            Some(o) => o.shared_with != devices,
            None => true,
        };
        if fresh {
            let session = GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
            let key = Inner::GroupKey {
                group,
                session_key: b64(&session.session_key().to_bytes()),
            };
            let my_account = client.me().map(|x| x.0);
            for (i, m) in info.members.iter().enumerate() {
                // A send to oneself reaches one's other devices only.
                if Some(m.account) == my_account && client.devices(m.account).await?.len() <= 1 {
                    continue;
                }
                let id = ClientMsgId::new(key_msg_id(&session.session_id(), i))
                    .expect("key message ids are valid");
                self.send_inner(client, m.account, &id, &key).await?;
            }
            self.outbound.insert(
                group,
                Outbound {
                    session,
                    shared_with: devices,
                },
            );
        }
        let out = self.outbound.get_mut(&group).expect("inserted above");
        let body = out.session.encrypt(json(&Inner::Message {
            body: b64(plaintext),
        }));
        let wire = Wire::Megolm {
            session_id: out.session.session_id(),
            body: body.to_base64(),
        };
        Ok(client.group_send(group, msg, json(&wire)).await?)
    }

    /// Decrypts a message envelope. Group keys are stored and reported as
    /// [`Decrypted::GroupKey`].
    pub fn decrypt(&mut self, env: &Envelope) -> Result<Decrypted> {
        if env.kind != EnvelopeKind::Message {
            return Err(E2eError::Malformed("not a message envelope".into()));
        }
        let payload = env.payload.as_deref().unwrap_or_default();
        let wire: Wire =
            serde_json::from_slice(payload).map_err(|e| E2eError::Malformed(e.to_string()))?;
        match wire {
            Wire::Olm {
                sender_key,
                kind,
                body,
            } => self.olm_decrypt(env.from_device, &sender_key, kind, &body),
            Wire::Megolm { session_id, body } => {
                let (group, session) = self
                    .inbound
                    .get_mut(&session_id)
                    .ok_or_else(|| E2eError::UnknownGroupSession(session_id.clone()))?;
                if env.group != Some(*group) {
                    return Err(E2eError::Decrypt(
                        "group session used outside its group".into(),
                    ));
                }
                let message = MegolmMessage::from_base64(&body)
                    .map_err(|e| E2eError::Malformed(e.to_string()))?;
                let plain = session
                    .decrypt(&message)
                    .map_err(|e| E2eError::Decrypt(e.to_string()))?;
                match serde_json::from_slice(&plain.plaintext) {
                    Ok(Inner::Message { body }) => Ok(Decrypted::Message(unb64(&body)?)),
                    _ => Err(E2eError::Malformed("unexpected group plaintext".into())),
                }
            }
        }
    }

    fn olm_decrypt(
        &mut self,
        from: DeviceId,
        sender_key: &str,
        kind: usize,
        body: &str,
    ) -> Result<Decrypted> {
        let sender = Curve25519PublicKey::from_base64(sender_key)
            .map_err(|e| E2eError::Malformed(e.to_string()))?;
        let message = OlmMessage::from_parts(kind, &unb64(body)?)
            .map_err(|e| E2eError::Malformed(e.to_string()))?;
        if self.identities.get(&from).is_some_and(|k| *k != sender) {
            return Err(E2eError::IdentityChanged(from));
        }
        let sessions = self.sessions.entry(from).or_default();
        let mut plain = None;
        for s in sessions.iter_mut() {
            if let Ok(p) = s.decrypt(&message) {
                plain = Some(p);
                break;
            }
        }
        let plain = match (plain, &message) {
            (Some(p), _) => p,
            (None, OlmMessage::PreKey(pre)) => {
                let created = self
                    .account
                    .create_inbound_session(SessionConfig::version_1(), sender, pre)
                    .map_err(|e| E2eError::Decrypt(e.to_string()))?;
                self.sessions
                    .entry(from)
                    .or_default()
                    .insert(0, created.session);
                created.plaintext
            }
            (None, OlmMessage::Normal(_)) => {
                return Err(E2eError::Decrypt("no session with this device".into()));
            }
        };
        self.pin(from, sender)?;
        match serde_json::from_slice(&plain).map_err(|e| E2eError::Malformed(e.to_string()))? {
            Inner::Message { body } => Ok(Decrypted::Message(unb64(&body)?)),
            Inner::GroupKey { group, session_key } => {
                let key = SessionKey::from_bytes(&unb64(&session_key)?)
                    .map_err(|e| E2eError::Malformed(e.to_string()))?;
                let session =
                    InboundGroupSession::new(&key, vodozemac::megolm::SessionConfig::version_1());
                self.inbound.insert(session.session_id(), (group, session));
                Ok(Decrypted::GroupKey(group))
            }
        }
    }
}

/// [`Crypto`]'s state as [`Crypto::save`] writes it: ids in clear, every
/// secret as a vodozemac pickle encrypted with the caller's key.
#[derive(Serialize, Deserialize)]
struct Saved {
    account: String,
    me: Option<(AccountId, DeviceId)>,
    next_key_id: u32,
    published: bool,
    identities: Vec<(DeviceId, String)>,
    sessions: Vec<(DeviceId, Vec<String>)>,
    outbound: Vec<(GroupId, String, Vec<DeviceId>)>,
    inbound: Vec<(GroupId, String)>,
}

impl Crypto {
    /// The whole state as text; its secrets are encrypted with `key`.
    /// Save it after every change (each message moves the ratchets).
    pub fn save(&self, key: &[u8; 32]) -> String {
        let saved = Saved {
            account: self.account.pickle().encrypt(key),
            me: self.me,
            next_key_id: self.next_key_id,
            published: self.published,
            identities: self
                .identities
                .iter()
                .map(|(d, k)| (*d, k.to_base64()))
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(d, v)| (*d, v.iter().map(|s| s.pickle().encrypt(key)).collect()))
                .collect(),
            outbound: self
                .outbound
                .iter()
                .map(|(g, o)| {
                    let shared = o.shared_with.iter().copied().collect();
                    (*g, o.session.pickle().encrypt(key), shared)
                })
                .collect(),
            inbound: self
                .inbound
                .values()
                .map(|(g, s)| (*g, s.pickle().encrypt(key)))
                .collect(),
        };
        serde_json::to_string(&saved).expect("plain data serializes")
    }

    /// Reads back what [`Crypto::save`] wrote with the same key.
    pub fn restore(text: &str, key: &[u8; 32]) -> Result<Crypto> {
        use vodozemac::megolm::{GroupSessionPickle, InboundGroupSessionPickle};
        use vodozemac::olm::{AccountPickle, SessionPickle};
        let bad = |e: &dyn std::fmt::Display| E2eError::Restore(e.to_string());
        let s: Saved = serde_json::from_str(text).map_err(|e| bad(&e))?;
        let account = AccountPickle::from_encrypted(&s.account, key).map_err(|e| bad(&e))?;
        let mut c = Crypto {
            account: Account::from_pickle(account),
            me: s.me,
            next_key_id: s.next_key_id,
            published: s.published,
            ..Crypto::new()
        };
        for (d, k) in s.identities {
            c.identities.insert(
                d,
                Curve25519PublicKey::from_base64(&k).map_err(|e| bad(&e))?,
            );
        }
        for (d, list) in s.sessions {
            let mut v = Vec::new();
            for p in list {
                let p = SessionPickle::from_encrypted(&p, key).map_err(|e| bad(&e))?;
                v.push(Session::from_pickle(p));
            }
            c.sessions.insert(d, v);
        }
        for (g, p, shared) in s.outbound {
            let p = GroupSessionPickle::from_encrypted(&p, key).map_err(|e| bad(&e))?;
            let session = GroupSession::from_pickle(p);
            let shared_with = shared.into_iter().collect();
            c.outbound.insert(
                g,
                Outbound {
                    session,
                    shared_with,
                },
            );
        }
        for (g, p) in s.inbound {
            let p = InboundGroupSessionPickle::from_encrypted(&p, key).map_err(|e| bad(&e))?;
            let session = InboundGroupSession::from_pickle(p);
            c.inbound.insert(session.session_id(), (g, session));
        }
        Ok(c)
    }
}

/// The message id of a group-key share: unique per session and member.
fn key_msg_id(session_id: &str, member: usize) -> String {
    let safe: String = session_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(40)
        .collect();
    format!("k.{safe}.{member}")
}
