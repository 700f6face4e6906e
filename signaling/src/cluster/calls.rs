//! The call leader: which node runs the 1:1 call state machine, and the
//! request/verdict exchange with it (see `crate::calls::remote`).

use super::{Cluster, Wire};
use crate::calls::{CallError, CallInput};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a node waits for the leader's verdict on a call request.
const VERDICT_WAIT: Duration = Duration::from_secs(5);

/// Keeps the leader key if this node holds it; takes it if nobody does or
/// its holder is no longer alive. Returns the leader.
/// KEYS[1]: the leader key. ARGV: this node, TTL in ms, prefix of the
/// liveness keys.
const ELECT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return cur
end
if cur and redis.call('EXISTS', ARGV[3] .. cur) == 1 then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"#;

/// A call request from another node, for this node as the leader.
#[derive(Debug)]
pub(crate) struct RemoteCall {
    pub(crate) from: String,
    pub(crate) req: u64,
    pub(crate) input: CallInput,
}

/// This node's side of the leadership.
pub(super) struct LeaderState {
    /// The leader as last seen (`None`: unknown, elect before use).
    pub(super) leader: Mutex<Option<String>>,
    next_req: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Option<CallError>>>>,
    inputs: mpsc::UnboundedSender<RemoteCall>,
    inputs_rx: Mutex<Option<mpsc::UnboundedReceiver<RemoteCall>>>,
}

impl Default for LeaderState {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        LeaderState {
            leader: Mutex::new(None),
            next_req: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            inputs: tx,
            inputs_rx: Mutex::new(Some(rx)),
        }
    }
}

impl Cluster {
    /// Renews or takes the call leadership; remembers who holds it.
    pub(super) async fn elect_call_leader(&self) -> Option<String> {
        let mut r = self.redis.clone();
        let alive_prefix = self.keys.alive("");
        let result: redis::RedisResult<String> = redis::Script::new(ELECT)
            .key(self.keys.calls_leader())
            .arg(&self.config.node_id)
            .arg(self.ttl_ms())
            .arg(alive_prefix)
            .invoke_async(&mut r)
            .await;
        let leader = match result {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot elect the call leader");
                None
            }
        };
        let me = leader.as_deref() == Some(self.config.node_id.as_str());
        let was_me = self.calls.leader.lock().as_deref() == Some(self.config.node_id.as_str());
        if me && !was_me {
            // The calls of the previous leader, before acting as the leader.
            self.load_calls().await;
        }
        let mut seen = self.calls.leader.lock();
        if *seen != leader {
            tracing::info!(this_node = me, "call leader changed");
        }
        seen.clone_from(&leader);
        leader
    }

    /// The node that runs the call state machine, electing one if unknown.
    pub(crate) async fn call_leader(&self) -> Option<String> {
        let known = self.calls.leader.lock().clone();
        match known {
            Some(l) => Some(l),
            None => self.elect_call_leader().await,
        }
    }

    /// Sends a call request to `leader`; for requests that want one, waits
    /// for the verdict. `None`: no verdict in time (the leader is then
    /// looked up again before the next request).
    pub(crate) async fn send_call(
        &self,
        leader: &str,
        input: CallInput,
    ) -> Option<Result<(), CallError>> {
        let wants = input.wants_answer();
        let req = self.calls.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if wants {
            self.calls.waiting.lock().insert(req, tx);
        }
        let msg = Wire::Call {
            from: self.config.node_id.clone(),
            req,
            input,
        };
        let mut r = self.redis.clone();
        self.publish(&mut r, &self.keys.inbox(leader), &msg).await;
        if !wants {
            return Some(Ok(()));
        }
        let verdict = tokio::time::timeout(VERDICT_WAIT, rx).await;
        self.calls.waiting.lock().remove(&req);
        match verdict {
            Ok(Ok(error)) => Some(error.map_or(Ok(()), Err)),
            _ => {
                tracing::warn!("the call leader did not answer in time");
                *self.calls.leader.lock() = None;
                None
            }
        }
    }

    /// Hands the requests this node receives as the leader to its gateway
    /// (once; `None` after the first call).
    pub(crate) fn take_call_requests(&self) -> Option<mpsc::UnboundedReceiver<RemoteCall>> {
        self.calls.inputs_rx.lock().take()
    }

    /// Sends the verdict on a request back to the node that made it.
    pub(crate) async fn answer_call(&self, to: &str, req: u64, error: Option<CallError>) {
        let mut r = self.redis.clone();
        self.publish(&mut r, &self.keys.inbox(to), &Wire::CallDone { req, error })
            .await;
    }

    pub(super) fn call_request(&self, from: String, req: u64, input: CallInput) {
        let _ = self.calls.inputs.send(RemoteCall { from, req, input });
    }

    pub(super) fn call_done(&self, req: u64, error: Option<CallError>) {
        if let Some(tx) = self.calls.waiting.lock().remove(&req) {
            let _ = tx.send(error);
        }
    }
}
