//! Group chats: the wire types of groups, their members and the system
//! events every change produces.

use crate::ids::{AccountId, GroupId};
use serde::{Deserialize, Serialize};

/// What a member may do in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    /// Sends messages (unless the group is announcement-only) and leaves.
    Member,
    /// Also edits the group, adds, removes, promotes and demotes members and
    /// manages the invite link.
    Admin,
    /// An admin that no other admin can remove or demote.
    Creator,
}

impl GroupRole {
    /// Admins and the creator.
    pub fn is_admin(self) -> bool {
        matches!(self, GroupRole::Admin | GroupRole::Creator)
    }
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    pub account: AccountId,
    pub role: GroupRole,
}

/// A group as its members see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInfo {
    pub group: GroupId,
    pub name: String,
    pub description: String,
    /// A media id of the group picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// Only admins may send messages.
    pub announce_only: bool,
    /// Members in the order they joined.
    pub members: Vec<GroupMember>,
    /// Number of the latest event of this group.
    pub event: u64,
    /// Unix milliseconds.
    pub created_at: u64,
}

/// Optional fields of a `group_update`; absent fields keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEdit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A media id; the empty string removes the picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce_only: Option<bool>,
}

/// What changed in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupChange {
    /// The group was created with these members (the creator included).
    Created {
        name: String,
        members: Vec<AccountId>,
    },
    Renamed {
        name: String,
    },
    Described {
        description: String,
    },
    /// The picture changed; `None` when it was removed.
    Picture {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        picture: Option<String>,
    },
    AnnounceOnly {
        on: bool,
    },
    /// An admin added these accounts.
    Added {
        accounts: Vec<AccountId>,
    },
    /// An admin removed these accounts.
    Removed {
        accounts: Vec<AccountId>,
    },
    /// The actor left.
    Left,
    /// The actor joined through the invite link.
    Joined,
    Promoted {
        accounts: Vec<AccountId>,
    },
    Demoted {
        accounts: Vec<AccountId>,
    },
    /// An admin reset the invite link: the old one no longer works.
    InviteReset,
    /// An admin set the disappearing-message timer (seconds, 0: off).
    Timer {
        seconds: u64,
    },
}

/// A system event of a group, delivered to every member device in order
/// (and to removed members, for their own removal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEvent {
    pub group: GroupId,
    /// Strictly increasing per group, from 1.
    pub event: u64,
    /// The account that made the change.
    pub by: AccountId,
    /// Unix milliseconds.
    pub at: u64,
    #[serde(flatten)]
    pub change: GroupChange,
}
