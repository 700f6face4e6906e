//! Pure rules of chats: edit and delete-for-everyone windows, and
//! disappearing-message timers. No I/O.

use palaver_proto::{AccountId, GroupId};

/// The disappearing-message timers a chat can have, in seconds (0: off).
pub const TIMER_CHOICES: [u64; 4] = [0, 86_400, 604_800, 7_776_000];

/// A conversation: with one account, or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chat {
    Direct(AccountId),
    Group(GroupId),
    /// A status post (to its audience).
    Status,
}

/// Whether `seconds` is one of [`TIMER_CHOICES`].
pub fn valid_timer(seconds: u64) -> bool {
    TIMER_CHOICES.contains(&seconds)
}

/// When a message stored at `now_ms` leaves the queues: the queue lifetime,
/// cut short by the chat's timer if it has one.
pub fn message_expiry(now_ms: u64, queue_expiry_ms: u64, timer_s: u64) -> u64 {
    if timer_s == 0 {
        queue_expiry_ms
    } else {
        queue_expiry_ms.min(now_ms.saturating_add(timer_s.saturating_mul(1000)))
    }
}

/// What a stored 1:1 `timer` envelope carries (as JSON in its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimerNote {
    pub seconds: u64,
    /// The account the timer was set with.
    pub to: AccountId,
}

/// What a stored `auto` envelope (a business's automatic message) carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AutoNote {
    pub text: String,
    /// The customer the chat is with.
    pub to: AccountId,
}

/// Why an edit or a delete-for-everyone is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmendError {
    #[error("you sent no message with this id in this chat")]
    NotFound,
    #[error("the message is too old to change")]
    WindowClosed,
}

/// What the store knows about a message an account sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentRecord {
    pub chat: Chat,
    pub ts_ms: u64,
    pub revoked: bool,
}

/// May `sent` be edited (in `chat`) or revoked (`chat: None`) at `now_ms`,
/// given the window?
pub fn check_amend(
    sent: Option<SentRecord>,
    chat: Option<Chat>,
    now_ms: u64,
    window_ms: u64,
) -> Result<SentRecord, AmendError> {
    let sent = sent.ok_or(AmendError::NotFound)?;
    if chat.is_some_and(|c| c != sent.chat) || (chat.is_some() && sent.revoked) {
        return Err(AmendError::NotFound);
    }
    if now_ms.saturating_sub(sent.ts_ms) > window_ms {
        return Err(AmendError::WindowClosed);
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: Chat = Chat::Direct(AccountId(2));

    fn sent(ts_ms: u64) -> Option<SentRecord> {
        Some(SentRecord {
            chat: BOB,
            ts_ms,
            revoked: false,
        })
    }

    #[test]
    fn windows_are_inclusive_and_chats_must_match() {
        assert!(check_amend(sent(1000), Some(BOB), 1000 + 900_000, 900_000).is_ok());
        assert_eq!(
            check_amend(sent(1000), Some(BOB), 1001 + 900_000, 900_000),
            Err(AmendError::WindowClosed)
        );
        assert_eq!(
            check_amend(sent(1000), Some(Chat::Group(GroupId(1))), 1000, 900_000),
            Err(AmendError::NotFound)
        );
        assert_eq!(check_amend(None, None, 0, 1), Err(AmendError::NotFound));
        // A clock that went backwards is not "too late".
        assert!(check_amend(sent(5000), None, 1000, 10).is_ok());
    }

    #[test]
    fn a_revoked_message_cannot_be_edited_but_revoking_again_is_fine() {
        let revoked = Some(SentRecord {
            revoked: true,
            ..sent(0).unwrap()
        });
        assert_eq!(
            check_amend(revoked, Some(BOB), 0, 10),
            Err(AmendError::NotFound)
        );
        assert!(check_amend(revoked, None, 0, 10).is_ok());
    }

    #[test]
    fn timers_shorten_but_never_lengthen_the_queue_life() {
        assert_eq!(message_expiry(0, 30 * 86_400_000, 0), 30 * 86_400_000);
        assert_eq!(message_expiry(0, 30 * 86_400_000, 86_400), 86_400_000);
        assert_eq!(message_expiry(0, 1000, 7_776_000), 1000);
        assert!(valid_timer(604_800) && !valid_timer(3600));
    }
}
