//! Pure rules of business accounts: profile limits, when the business is
//! away, and which automatic messages a customer's message triggers.

use palaver_proto::business::{AutoMessages, AwaySchedule, BusinessProfile};

/// Longest text field of a profile, in characters.
pub const MAX_FIELD_CHARS: usize = 512;
/// Longest automatic message, in characters.
pub const MAX_AUTO_CHARS: usize = 1024;
/// Silence after which a customer is greeted again.
pub const GREETING_AFTER_MS: u64 = 14 * 86_400_000;
/// A customer gets the away message at most this often.
pub const AWAY_EVERY_MS: u64 = 12 * 3_600_000;

const MINUTES_PER_WEEK: i64 = 7 * 1440;

/// Why a profile or automatic messages are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BusinessError(pub &'static str);

fn short(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(|c| c.is_control() && c != '\n')
}

/// Checks a profile's sizes and hours.
pub fn check_profile(p: &BusinessProfile) -> Result<(), BusinessError> {
    let fields = [
        &p.name,
        &p.description,
        &p.category,
        &p.address,
        &p.website,
        &p.email,
    ];
    if !fields.iter().all(|f| short(f, MAX_FIELD_CHARS)) {
        return Err(BusinessError("profile fields are at most 512 characters"));
    }
    if !(-720..=840).contains(&p.utc_offset_minutes) {
        return Err(BusinessError("utc_offset_minutes must be -720 to 840"));
    }
    if p.hours.len() > 21
        || p.hours
            .iter()
            .any(|h| h.day > 6 || h.open >= h.close || h.close > 1440)
    {
        return Err(BusinessError(
            "hours: day 0-6, open before close, close at most 1440, at most 21 ranges",
        ));
    }
    Ok(())
}

/// Checks automatic messages.
pub fn check_auto(a: &AutoMessages) -> Result<(), BusinessError> {
    let texts = [&a.greeting, &a.away];
    if texts.iter().any(|t| {
        t.as_ref()
            .is_some_and(|t| t.is_empty() || !short(t, MAX_AUTO_CHARS))
    }) {
        return Err(BusinessError("automatic messages are 1 to 1024 characters"));
    }
    if a.away.is_some() != a.away_schedule.is_some() {
        return Err(BusinessError(
            "an away message needs an away_schedule, and the reverse",
        ));
    }
    Ok(())
}

/// Whether the business is open at `now_ms` by its profile's hours.
pub fn is_open(p: &BusinessProfile, now_ms: u64) -> bool {
    let minutes = (now_ms / 60_000) as i64 + i64::from(p.utc_offset_minutes);
    // 1970-01-01 was a Thursday: day 3 when Monday is 0.
    let week_minute = (minutes + 3 * 1440).rem_euclid(MINUTES_PER_WEEK);
    let (day, minute) = (week_minute / 1440, week_minute % 1440);
    p.hours.iter().any(|h| {
        i64::from(h.day) == day && (i64::from(h.open)..i64::from(h.close)).contains(&minute)
    })
}

/// What a business last sent one customer automatically, and when the
/// customer last wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContactState {
    pub last_in_ms: Option<u64>,
    pub last_away_ms: Option<u64>,
}

/// The automatic messages a customer's message at `now_ms` triggers.
pub fn triggered<'a>(
    auto: &'a AutoMessages,
    profile: &BusinessProfile,
    contact: ContactState,
    now_ms: u64,
) -> Vec<&'a str> {
    let mut out = Vec::new();
    let silent = contact
        .last_in_ms
        .is_none_or(|t| now_ms.saturating_sub(t) >= GREETING_AFTER_MS);
    if let (Some(g), true) = (&auto.greeting, silent) {
        out.push(g.as_str());
    }
    let away = match auto.away_schedule {
        Some(AwaySchedule::Always) => true,
        Some(AwaySchedule::OutsideHours) => !is_open(profile, now_ms),
        None => false,
    };
    let due = contact
        .last_away_ms
        .is_none_or(|t| now_ms.saturating_sub(t) >= AWAY_EVERY_MS);
    if let (Some(a), true, true) = (&auto.away, away, due) {
        out.push(a.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_proto::business::OpeningHours;

    /// Monday 2026-11-23 00:00 UTC, in Unix ms.
    const MONDAY: u64 = 1_795_392_000_000;

    fn shop() -> BusinessProfile {
        BusinessProfile {
            utc_offset_minutes: 60,
            hours: vec![OpeningHours {
                day: 0,
                open: 9 * 60,
                close: 17 * 60,
            }],
            ..BusinessProfile::default()
        }
    }

    fn auto() -> AutoMessages {
        AutoMessages {
            greeting: Some("Welcome!".into()),
            away: Some("We are closed.".into()),
            away_schedule: Some(AwaySchedule::OutsideHours),
        }
    }

    #[test]
    fn opening_hours_follow_the_local_clock() {
        let hour = 3_600_000;
        // 08:30 UTC is 09:30 local (UTC+1) on Monday: open.
        assert!(is_open(&shop(), MONDAY + 8 * hour + hour / 2));
        // 07:30 UTC is 08:30 local: closed; 16:00 UTC is 17:00 local: closed.
        assert!(!is_open(&shop(), MONDAY + 7 * hour + hour / 2));
        assert!(!is_open(&shop(), MONDAY + 16 * hour));
        // Tuesday at the same time: closed (no hours that day).
        assert!(!is_open(&shop(), MONDAY + 24 * hour + 10 * hour));
    }

    #[test]
    fn greetings_on_first_contact_and_after_silence() {
        let at = MONDAY + 10 * 3_600_000; // open
        let a = auto();
        assert_eq!(
            triggered(&a, &shop(), ContactState::default(), at),
            vec!["Welcome!"]
        );
        let recent = ContactState {
            last_in_ms: Some(at - 1000),
            last_away_ms: None,
        };
        assert!(triggered(&a, &shop(), recent, at).is_empty());
        let old = ContactState {
            last_in_ms: Some(at - GREETING_AFTER_MS),
            last_away_ms: None,
        };
        assert_eq!(triggered(&a, &shop(), old, at), vec!["Welcome!"]);
    }

    #[test]
    fn away_messages_outside_hours_at_most_twice_a_day() {
        let night = MONDAY + 22 * 3_600_000;
        let a = auto();
        let seen = ContactState {
            last_in_ms: Some(night - 1000),
            last_away_ms: None,
        };
        assert_eq!(triggered(&a, &shop(), seen, night), vec!["We are closed."]);
        let told = ContactState {
            last_away_ms: Some(night - 1000),
            ..seen
        };
        assert!(triggered(&a, &shop(), told, night).is_empty());
    }

    #[test]
    fn bad_profiles_and_messages_are_refused() {
        let mut p = shop();
        p.hours[0].close = 1441;
        assert!(check_profile(&p).is_err());
        let mut p = shop();
        p.website = "x".repeat(513);
        assert!(check_profile(&p).is_err());
        assert!(check_profile(&shop()).is_ok());
        let mut a = auto();
        a.away_schedule = None;
        assert!(check_auto(&a).is_err());
        a.away = None;
        assert!(check_auto(&a).is_ok());
        a.greeting = Some(String::new());
        assert!(check_auto(&a).is_err());
    }
}
