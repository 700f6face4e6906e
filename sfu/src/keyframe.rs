//! Keyframes: spotting the first packet of one, and merging the requests
//! for one that subscribers send toward a publisher.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::KeyframeRequestKind;
use str0m::rtp::Vp8Descriptor;

/// True when `payload` (RTP payload, no header) starts a keyframe.
/// Audio and unknown codecs never do.
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => Vp8Descriptor::parse(payload).is_ok_and(|d| d.starts_keyframe(payload)),
        Codec::Vp9 => vp9_starts_keyframe(payload),
        Codec::H264 => h264_starts_keyframe(payload),
        Codec::Av1 => av1_starts_keyframe(payload),
        _ => false,
    }
}

/// RFC 9628: first byte `I P L F B E V Z`. A keyframe's first packet has
/// P = 0 (no inter-picture dependency) and B = 1 (start of a frame), and
/// is on the base spatial layer (when L is set, the layer index is 0).
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let p = b0 & 0x40 != 0;
    let b = b0 & 0x08 != 0;
    if p || !b {
        return false;
    }
    if b0 & 0x20 == 0 {
        return true;
    }
    // Skip the picture id (1 or 2 bytes) to the layer indices.
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&pid) = payload.get(i) else {
            return false;
        };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    payload.get(i).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

/// RFC 6184: an IDR slice (NAL type 5) or a sequence parameter set (7)
/// alone, in a STAP-A (24), or at the start of a FU-A (28).
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => stap_a_has_keyframe(&payload[1..]),
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
}

fn stap_a_has_keyframe(mut rest: &[u8]) -> bool {
    while rest.len() > 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(nal) = rest.get(2..2 + len) else {
            return false;
        };
        if nal.first().is_some_and(|h| matches!(h & 0x1f, 5 | 7)) {
            return true;
        }
        rest = &rest[2 + len..];
    }
    false
}

/// AV1 RTP aggregation header `Z Y W W N - - -`: N = 1 marks the first
/// packet of a coded video sequence, which starts with a keyframe.
fn av1_starts_keyframe(payload: &[u8]) -> bool {
    payload.first().is_some_and(|h| h & 0x08 != 0)
}

/// Merges keyframe requests toward one publisher stream and sends at most
/// one per `min_interval`; a request inside the interval is kept and sent
/// when it ends (a FIR wins over a PLI).
#[derive(Debug)]
pub struct KeyframeGate {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending: Option<KeyframeRequestKind>,
}

impl KeyframeGate {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
            pending: None,
        }
    }

    /// Records a request; returns the request to send now, if any.
    pub fn request(
        &mut self,
        kind: KeyframeRequestKind,
        now: Instant,
    ) -> Option<KeyframeRequestKind> {
        self.pending = Some(match (self.pending, kind) {
            (Some(KeyframeRequestKind::Fir), _) | (_, KeyframeRequestKind::Fir) => {
                KeyframeRequestKind::Fir
            }
            _ => KeyframeRequestKind::Pli,
        });
        self.poll(now)
    }

    /// The merged request, once the interval since the last one has passed.
    pub fn poll(&mut self, now: Instant) -> Option<KeyframeRequestKind> {
        self.pending?;
        if self
            .last_sent
            .is_some_and(|at| now < at + self.min_interval)
        {
            return None;
        }
        self.last_sent = Some(now);
        self.pending.take()
    }

    /// When a pending request becomes due (requests are sent at once
    /// otherwise, so a pending one always waits for the interval).
    pub fn next_timeout(&self) -> Option<Instant> {
        self.pending?;
        self.last_sent.map(|at| at + self.min_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_merged_and_rate_limited() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::new(Duration::from_millis(500));
        assert_eq!(
            g.request(KeyframeRequestKind::Pli, t0),
            Some(KeyframeRequestKind::Pli)
        );
        // Ten subscribers ask within the interval: nothing goes out yet.
        for i in 1..=10 {
            let at = t0 + Duration::from_millis(10 * i);
            let kind = if i == 5 {
                KeyframeRequestKind::Fir
            } else {
                KeyframeRequestKind::Pli
            };
            assert_eq!(g.request(kind, at), None);
        }
        assert_eq!(g.next_timeout(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(g.poll(t0 + Duration::from_millis(499)), None);
        // One merged request, and the FIR won.
        assert_eq!(
            g.poll(t0 + Duration::from_millis(500)),
            Some(KeyframeRequestKind::Fir)
        );
        assert_eq!(g.poll(t0 + Duration::from_secs(5)), None);
        assert_eq!(g.next_timeout(), None);
    }

    #[test]
    fn detects_vp8_keyframes() {
        // X=1, S=1, PID=0; I=1 with a 15-bit picture id; then P=0.
        let key = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        let delta = [0x90, 0x80, 0x81, 0x24, 0x11, 0x02, 0x00];
        let middle = [0x80, 0x80, 0x81, 0x23, 0x10];
        assert!(starts_keyframe(Codec::Vp8, &key));
        assert!(!starts_keyframe(Codec::Vp8, &delta));
        assert!(!starts_keyframe(Codec::Vp8, &middle));
        assert!(!starts_keyframe(Codec::Opus, &key));
        assert!(!starts_keyframe(Codec::Vp8, &[]));
    }

    #[test]
    fn detects_h264_keyframes() {
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a]));
        // STAP-A with SPS.
        assert!(starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42]
        ));
        // FU-A start of an IDR slice, and its continuation.
        assert!(starts_keyframe(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c, 0x05, 0x00]));
        // Truncated STAP-A never panics.
        assert!(!starts_keyframe(Codec::H264, &[0x78, 0xff, 0xff, 0x67]));
    }

    #[test]
    fn detects_vp9_keyframes() {
        assert!(starts_keyframe(Codec::Vp9, &[0x08]));
        assert!(!starts_keyframe(Codec::Vp9, &[0x48]));
        // L set, 15-bit picture id, spatial layer 1: not the base.
        assert!(!starts_keyframe(Codec::Vp9, &[0xa8, 0x80, 0x01, 0x02]));
        assert!(starts_keyframe(Codec::Vp9, &[0xa8, 0x80, 0x01, 0x00]));
    }
}
