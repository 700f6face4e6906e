//! Business accounts: a public profile and automatic greeting and away
//! messages.

use serde::{Deserialize, Serialize};

/// Opening hours on one day, in minutes after local midnight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningHours {
    /// 0 is Monday, 6 is Sunday.
    pub day: u8,
    pub open: u16,
    /// After `open`, at most 1440.
    pub close: u16,
}

/// What anyone may read about a business.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessProfile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub website: String,
    #[serde(default)]
    pub email: String,
    /// Local time of the business: minutes east of UTC.
    #[serde(default)]
    pub utc_offset_minutes: i16,
    #[serde(default)]
    pub hours: Vec<OpeningHours>,
}

/// When the away message is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "when", rename_all = "snake_case", deny_unknown_fields)]
pub enum AwaySchedule {
    Always,
    /// Outside the profile's opening hours.
    OutsideHours,
}

/// Automatic messages. They are sent by the server on the business's
/// behalf, so they are **not** end-to-end encrypted: the business publishes
/// their text to the server, like its profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoMessages {
    /// Sent to a customer's first message, and to the first one after 14
    /// days of silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away_schedule: Option<AwaySchedule>,
}
