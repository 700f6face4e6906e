//! `push_subscribe`, `push_unsubscribe`, `push_quiet`.

use crate::conn::Conn;
use crate::handlers::ReqError;
use palaver_proto::frames::{ClientFrame, ServerFrame};
use palaver_proto::push::{MAX_ENDPOINT, MAX_RELAY_NAME, MAX_RELAY_TOKEN, PushTarget};
use palaver_proto::{ErrorCode, RequestId};

type Reply = Result<(), ReqError>;

fn bad(message: impl Into<String>) -> ReqError {
    ReqError::new(ErrorCode::BadRequest, message)
}

/// Checks a target before it is stored. Where an endpoint's name leads is
/// checked at send time, on the addresses it resolves to.
pub(crate) fn check_target(t: &PushTarget, config: &super::PushConfig) -> Result<(), ReqError> {
    match t {
        PushTarget::WebPush {
            endpoint,
            p256dh,
            auth,
        } => {
            if endpoint.len() > MAX_ENDPOINT {
                return Err(bad(format!("endpoint longer than {MAX_ENDPOINT} bytes")));
            }
            let https = endpoint.starts_with("https://");
            let http = config.allow_http && endpoint.starts_with("http://");
            if !(https || http) {
                return Err(bad("endpoint must be an https:// URL"));
            }
            let rest = endpoint.split_once("://").map(|(_, r)| r).unwrap_or("");
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() || host.contains('@') || endpoint.chars().any(char::is_whitespace) {
                return Err(bad("endpoint is not a valid URL"));
            }
            palaver_push::ece::SubscriptionKeys::parse(p256dh, auth)
                .map_err(|e| bad(format!("bad subscription keys: {e}")))?;
            Ok(())
        }
        PushTarget::Relay { relay, token } => {
            if relay.len() > MAX_RELAY_NAME || !config.relays.iter().any(|r| r == relay) {
                return Err(bad("unknown relay: not configured on this server"));
            }
            if token.is_empty() || token.len() > MAX_RELAY_TOKEN {
                return Err(bad(format!("token must be 1 to {MAX_RELAY_TOKEN} bytes")));
            }
            Ok(())
        }
    }
}

impl Conn {
    /// Handles the `push_*` frames.
    pub(crate) async fn push_frame(&mut self, frame: ClientFrame) -> Reply {
        let me = self.me()?;
        let Some(p) = self.gw.push.get() else {
            return Err(bad("push is disabled on this server"));
        };
        let (id, stored) = match frame {
            ClientFrame::PushSubscribe { id, target } => {
                check_target(&target, &p.config)?;
                let kind = match &target {
                    PushTarget::WebPush { .. } => "web_push",
                    PushTarget::Relay { .. } => "relay",
                };
                tracing::info!(kind, "push subscription set");
                let stored = self
                    .gw
                    .store
                    .set_push_target(me.device, Some(target))
                    .await?;
                (id, stored)
            }
            ClientFrame::PushUnsubscribe { id } => {
                (id, self.gw.store.set_push_target(me.device, None).await?)
            }
            ClientFrame::PushQuiet { id, until_ms } => {
                (id, self.gw.store.set_push_quiet(me.device, until_ms).await?)
            }
            _ => return Ok(()),
        };
        if !stored {
            return Err(ReqError::new(ErrorCode::NotFound, "this device is revoked"));
        }
        self.done(id);
        Ok(())
    }

    fn done(&mut self, id: RequestId) {
        self.reply(ServerFrame::Done { id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::PushConfig;

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn web(endpoint: &str, p256dh: &str) -> PushTarget {
        PushTarget::WebPush {
            endpoint: endpoint.into(),
            p256dh: p256dh.into(),
            auth: AUTH.into(),
        }
    }

    #[test]
    fn targets_are_checked() {
        let mut c = PushConfig {
            relays: vec!["apns".into()],
            ..PushConfig::default()
        };
        assert!(check_target(&web("https://push.example/x", P256DH), &c).is_ok());
        let refused = [
            web("http://push.example/x", P256DH),
            web("ftp://push.example/x", P256DH),
            web("https:///x", P256DH),
            web("https://user@push.example/x", P256DH),
            web(
                &format!("https://p.example/{}", "a".repeat(MAX_ENDPOINT)),
                P256DH,
            ),
            web("https://push.example/x", "AAAA"),
            PushTarget::Relay {
                relay: "fcm".into(),
                token: "t".into(),
            },
            PushTarget::Relay {
                relay: "apns".into(),
                token: String::new(),
            },
        ];
        for t in refused {
            let e = check_target(&t, &c).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{t:?}");
        }
        c.allow_http = true;
        assert!(check_target(&web("http://127.0.0.1:9/x", P256DH), &c).is_ok());
    }
}
