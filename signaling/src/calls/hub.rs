//! The driver of the call state machine: owns it behind a lock, turns its
//! outputs into frames for connected devices and rows of call history, and
//! wakes it when a timer is due.

use super::{CallError, CallEvent, CallInput, CallRecord, CallSnapshot, Calls, Output, WallClock};
use crate::Gateway;
use crate::cluster::{CallChange, Cluster, RemoteCall};
use crate::router::Push;
use base64::Engine;
use hmac::{Hmac, Mac};
use palaver_proto::DeviceId;
use palaver_proto::frames::{CallLogEntry, IceServer, ServerFrame};
use parking_lot::Mutex;
use sha1::Sha1;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The ICE servers handed to call participants.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct IceConfig {
    /// `stun:` URLs, given as they are.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs; they get time-limited credentials.
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server (REST API credentials).
    pub turn_secret: Option<String>,
    /// Lifetime of the TURN credentials issued for a call.
    pub credential_ttl: Duration,
    /// TURN servers by region (`[[calls.turn_servers]]`), handed out
    /// before `turn_urls`; see [`super::regions`].
    pub turn_regions: Vec<super::regions::RegionServers>,
    /// This signaling node's region: whose TURN servers come first.
    pub region: Option<String>,
}

impl std::fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceConfig")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field(
                "turn_secret",
                &self.turn_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("credential_ttl", &self.credential_ttl)
            .field("turn_regions", &self.turn_regions)
            .field("region", &self.region)
            .finish()
    }
}

/// Time-limited TURN credentials (the "TURN REST API" scheme coturn and
/// Palaver's TURN server accept): user `EXPIRY:DEVICE`, password
/// base64(HMAC-SHA1(secret, user)).
pub fn turn_credentials(secret: &str, device: DeviceId, expires_unix: u64) -> (String, String) {
    let user = format!("{expires_unix}:{device}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(user.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (user, password)
}

impl IceConfig {
    /// The servers for one participant, the node's region first.
    pub fn servers_for(&self, device: DeviceId, now_unix: u64) -> Vec<IceServer> {
        self.servers_with_hint(device, now_unix, None)
    }

    /// The servers for one participant whose client prefers the region
    /// `hint` (ignored unless it names a configured region): STUN, then one
    /// entry per TURN region in [`super::regions::ordered`] order, each with
    /// the same fresh credentials.
    pub fn servers_with_hint(
        &self,
        device: DeviceId,
        now_unix: u64,
        hint: Option<&str>,
    ) -> Vec<IceServer> {
        use super::regions::{ordered, preferred};
        let mut out = Vec::new();
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        let Some(secret) = &self.turn_secret else {
            return out;
        };
        let prefer = preferred(&self.turn_regions, self.region.as_deref(), hint);
        let groups = ordered(&self.turn_regions, prefer, &self.turn_urls);
        if groups.is_empty() {
            return out;
        }
        let (user, pass) =
            turn_credentials(secret, device, now_unix + self.credential_ttl.as_secs());
        out.extend(groups.into_iter().map(|urls| IceServer {
            urls,
            username: Some(user.clone()),
            credential: Some(pass.clone()),
        }));
        out
    }
}

/// Shared by every connection of a gateway.
#[derive(Debug, Default)]
pub(crate) struct CallHub {
    core: Mutex<Calls>,
    wake: Notify,
}

impl CallHub {
    pub(crate) fn new(core: Calls) -> Self {
        CallHub {
            core: Mutex::new(core),
            wake: Notify::new(),
        }
    }

    /// Runs `f` on the state machine, then carries out what it produced.
    /// In a cluster, calls taken over from a previous leader are restored
    /// first and the calls that changed are persisted (in order).
    pub(crate) fn with<T>(&self, gw: &Gateway, f: impl FnOnce(&mut Calls, Instant) -> T) -> T {
        let (result, outputs) = {
            let mut core = self.core.lock();
            let clock = WallClock {
                now: Instant::now(),
                unix_ms: crate::now_ms(),
            };
            if let Some(c) = &gw.cluster {
                restore_loaded(&mut core, c, clock);
            }
            let result = f(&mut core, clock.now);
            let outputs: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
            if let Some(c) = &gw.cluster {
                c.persist_calls(changes(&mut core, clock));
            }
            (result, outputs)
        };
        self.wake.notify_one();
        self.dispatch(gw, outputs);
        result
    }

    /// Delivers the frames; when a call ended in this batch, its history
    /// row is committed first, so a client that sees `call_ended` finds the
    /// call in its history.
    fn dispatch(&self, gw: &Gateway, outputs: Vec<Output>) {
        let mut frames = Vec::new();
        let mut records = Vec::new();
        for out in outputs {
            match out {
                Output::Send { to, event } => frames.push((to, to_frame(gw, to, event))),
                Output::Record(record) => records.push(log_entry(record, crate::now_ms())),
                Output::Push { to, event } => gw.call_push(to, event),
            }
        }
        let router = gw.router.clone();
        let cluster = gw.cluster.clone();
        let deliver = move |frames: Vec<(DeviceId, ServerFrame)>| {
            for (to, frame) in frames {
                let frame = Arc::new(frame);
                if !router.deliver(to, Push::Frame(frame.clone()))
                    && let Some(c) = &cluster
                {
                    c.deliver_frame(to, frame);
                }
            }
        };
        if records.is_empty() {
            deliver(frames);
            return;
        }
        let store = gw.store.clone();
        tokio::spawn(async move {
            for entry in records {
                if let Err(e) = store.record_call(entry).await {
                    tracing::warn!(error = %e, "cannot record a call in the history");
                }
            }
            deliver(frames);
        });
    }

    /// Ends calls whose timers ran out, until shutdown.
    pub(crate) async fn run_timers(gw: Arc<Gateway>) {
        loop {
            let next = gw.calls.core.lock().poll_timeout();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = gw.calls.wake.notified() => continue,
                _ = sleep => {}
            }
            gw.calls.with(&gw, |core, now| core.handle_timeout(now));
        }
    }
}

impl Gateway {
    /// Runs a call input on the call leader: here without a cluster or when
    /// this node leads, otherwise on the leader node. `None`: the leader
    /// did not answer in time.
    pub(crate) async fn call_input(&self, input: CallInput) -> Option<Result<(), CallError>> {
        if let Some(c) = &self.cluster {
            let leader = c.call_leader().await?;
            if leader != c.node_id() {
                return c.send_call(&leader, input).await;
            }
        }
        Some(self.calls.with(self, |core, now| input.apply(core, now)))
    }

    /// As the call leader, runs the requests of other nodes until shutdown.
    pub(crate) async fn run_remote_calls(self: Arc<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let Some(mut requests) = cluster.take_call_requests() else {
            return;
        };
        // Devices found absent by the last sweep (see `drop_absent_devices`).
        let mut suspects = HashSet::new();
        let mut sweep = tokio::time::interval(cluster.absent_sweep_interval());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let req = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = cluster.took_over_calls() => {
                    let gone = self.drop_absent_devices(&cluster, None).await;
                    tracing::info!(absent = gone, "took over the calls");
                    continue;
                }
                _ = sweep.tick(), if cluster.leads_calls() => {
                    let gone = self.drop_absent_devices(&cluster, Some(&mut suspects)).await;
                    if gone > 0 {
                        tracing::info!(absent = gone, "devices of a dead node left their calls");
                    }
                    continue;
                }
                r = requests.recv() => r,
            };
            let Some(RemoteCall { from, req, input }) = req else {
                return;
            };
            let wants = input.wants_answer();
            let result = self.calls.with(&self, |core, now| input.apply(core, now));
            if wants {
                cluster.answer_call(&from, req, result.err()).await;
            }
        }
    }
}

/// Restores the calls this node loaded when it became the leader.
fn restore_loaded(core: &mut Calls, cluster: &Cluster, clock: WallClock) {
    for json in cluster.take_loaded_calls().unwrap_or_default() {
        let restored = serde_json::from_str::<CallSnapshot>(&json)
            .map_err(|e| e.to_string())
            .and_then(|s| core.restore(s, clock).map_err(|e| e.to_string()));
        if let Err(e) = restored {
            tracing::warn!(error = %e, "cannot take over a persisted call");
        }
    }
}

/// The persisted form of the calls that changed.
fn changes(core: &mut Calls, clock: WallClock) -> Vec<CallChange> {
    core.take_changed()
        .into_iter()
        .map(|call| {
            let json = core
                .snapshot(call, clock)
                .and_then(|s| serde_json::to_string(&s).ok());
            (call, json)
        })
        .collect()
}

impl Gateway {
    /// Devices in calls that are connected nowhere count as dropped and get
    /// the reconnect grace: after a takeover, those whose node died with the
    /// old leader; on the leader's periodic sweep, those of any node that
    /// died (it could not report their disconnection). A sweep drops only
    /// devices the previous sweep found absent too (`suspects`), so that a
    /// node that stalled briefly does not lose its calls. Returns how many.
    async fn drop_absent_devices(
        &self,
        cluster: &Cluster,
        suspects: Option<&mut HashSet<DeviceId>>,
    ) -> usize {
        let devices = self.calls.with(self, |core, _| core.devices());
        let connected = cluster.connected(&devices).await;
        let absent: HashSet<DeviceId> = devices
            .into_iter()
            .filter(|d| !connected.contains(d))
            .collect();
        let gone: Vec<DeviceId> = match suspects {
            None => absent.into_iter().collect(),
            Some(s) => {
                let gone = absent.intersection(s).copied().collect();
                *s = absent;
                gone
            }
        };
        let n = gone.len();
        self.calls.with(self, |core, now| {
            for d in gone {
                core.disconnected(now, d);
            }
        });
        n
    }
}

fn log_entry(r: CallRecord, ended_ms: u64) -> CallLogEntry {
    let started = ended_ms.saturating_sub(r.total.as_millis() as u64);
    CallLogEntry {
        call: r.call,
        caller: r.caller.account,
        caller_device: r.caller.device,
        callee: r.callee,
        answered_by: r.answered_by,
        media: r.media,
        reason: r.reason,
        started_at: started,
        answered_at: r
            .talk
            .map(|t| ended_ms.saturating_sub(t.as_millis() as u64)),
        ended_at: ended_ms,
    }
}

fn to_frame(gw: &Gateway, to: DeviceId, event: CallEvent) -> ServerFrame {
    match event {
        CallEvent::Incoming {
            call,
            from,
            media,
            sdp,
        } => ServerFrame::CallIncoming {
            call,
            from: from.account,
            from_device: from.device,
            media,
            sdp,
            ice_servers: gw.ice_servers(to),
        },
        CallEvent::Ringing { call } => ServerFrame::CallRinging { call },
        CallEvent::Accepted { call, by, sdp } => ServerFrame::CallAccepted {
            call,
            device: by,
            sdp,
        },
        CallEvent::AnsweredElsewhere { call } => ServerFrame::CallAnsweredElsewhere { call },
        CallEvent::Ended { call, reason } => ServerFrame::CallEnded { call, reason },
        CallEvent::Sdp {
            call,
            from,
            kind,
            sdp,
        } => ServerFrame::CallSdp {
            call,
            from_device: from,
            kind,
            sdp,
        },
        CallEvent::Ice {
            call,
            from,
            candidate,
        } => ServerFrame::CallIce {
            call,
            from_device: from,
            candidate,
        },
        CallEvent::Waiting { call, from } => ServerFrame::CallWaiting { call, from },
        CallEvent::PeerConnection { call, connected } => ServerFrame::CallPeer { call, connected },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_rest_scheme() {
        // Reference value computed independently:
        // printf '1700000000:42' | openssl dgst -sha1 -hmac secret -binary | base64
        let (user, pass) = turn_credentials("secret", DeviceId(42), 1_700_000_000);
        assert_eq!(user, "1700000000:42");
        assert_eq!(pass, "ZzfPuPkrzUOsnm5YISnTiKDnXWo=");
    }

    #[test]
    fn ice_servers_include_turn_only_with_a_secret() {
        let mut ice = IceConfig {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: None,
            credential_ttl: Duration::from_secs(3600),
            ..IceConfig::default()
        };
        assert_eq!(ice.servers_for(DeviceId(1), 0).len(), 1);
        ice.turn_secret = Some("s".into());
        let servers = ice.servers_for(DeviceId(1), 100);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("3700:1"));
        assert!(!format!("{ice:?}").contains("\"s\""));
    }

    #[test]
    fn regional_servers_come_first_with_the_same_credentials() {
        use crate::calls::regions::RegionServers;
        let ice = IceConfig {
            turn_urls: vec!["turn:plain".into()],
            turn_secret: Some("s".into()),
            credential_ttl: Duration::from_secs(60),
            turn_regions: vec![
                RegionServers {
                    region: "us".into(),
                    urls: vec!["turn:us".into()],
                },
                RegionServers {
                    region: "eu".into(),
                    urls: vec!["turn:eu".into()],
                },
            ],
            region: Some("eu".into()),
            ..IceConfig::default()
        };
        let urls = |servers: Vec<IceServer>| -> Vec<String> {
            servers.into_iter().flat_map(|s| s.urls).collect()
        };
        assert_eq!(
            urls(ice.servers_for(DeviceId(1), 0)),
            ["turn:eu", "turn:us", "turn:plain"]
        );
        let hinted = ice.servers_with_hint(DeviceId(1), 0, Some("us"));
        assert!(hinted.iter().all(|s| s.username.as_deref() == Some("60:1")));
        assert_eq!(urls(hinted), ["turn:us", "turn:eu", "turn:plain"]);
    }
}
