//! Pure rules of group chats: who may change what, and which events a
//! change produces. The store loads a [`GroupState`], calls [`apply`] and
//! persists the result; nothing here touches the disk or the clock.

use palaver_proto::AccountId;
use palaver_proto::groups::{GroupChange, GroupEdit, GroupRole};

/// Longest group name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2048;
/// Longest picture media id, in bytes.
pub const MAX_PICTURE_BYTES: usize = 128;
/// Most accounts named in one request.
pub const MAX_ACCOUNTS_PER_REQUEST: usize = 256;

/// A group as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    pub description: String,
    pub picture: Option<String>,
    pub announce_only: bool,
    /// Disappearing-message timer, seconds (0: off).
    pub timer_s: u64,
    /// Members in join order.
    pub members: Vec<(AccountId, GroupRole)>,
}

impl GroupState {
    /// A role of `account`, if it is a member.
    pub fn role(&self, account: AccountId) -> Option<GroupRole> {
        self.members
            .iter()
            .find(|(a, _)| *a == account)
            .map(|(_, r)| *r)
    }

    fn set_role(&mut self, account: AccountId, role: GroupRole) {
        if let Some(m) = self.members.iter_mut().find(|(a, _)| *a == account) {
            m.1 = role;
        }
    }

    /// Whether `account` may send a message to the group now.
    pub fn may_send(&self, account: AccountId) -> Result<(), GroupError> {
        match self.role(account) {
            None => Err(GroupError::NotMember),
            Some(r) if self.announce_only && !r.is_admin() => Err(GroupError::AnnounceOnly),
            Some(_) => Ok(()),
        }
    }
}

/// A change to a group, as requested by one of its members (or, for
/// [`GroupOp::Join`], by someone holding the invite code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    Edit(GroupEdit),
    Add(Vec<AccountId>),
    Remove(Vec<AccountId>),
    Promote(Vec<AccountId>),
    Demote(Vec<AccountId>),
    Leave,
    Join,
    ResetInvite,
    /// One of [`crate::chats::TIMER_CHOICES`].
    SetTimer(u64),
}

/// Why a group request is refused. Nothing changes when it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the group does not exist or you are not a member")]
    NotMember,
    #[error("only group admins may do this")]
    NotAdmin,
    #[error("only admins may send messages in this group")]
    AnnounceOnly,
    #[error("the group creator cannot be removed or demoted")]
    Creator,
    #[error("a group has at most {limit} members")]
    Full { limit: usize },
    #[error("{0}")]
    Invalid(&'static str),
    #[error("account {0} does not exist")]
    UnknownAccount(AccountId),
    #[error("account {0} is not a member")]
    NotAMember(AccountId),
    #[error("already a member")]
    AlreadyMember,
}

/// Checks a new group's name and its initial members (creator excluded).
pub fn check_new(
    creator: AccountId,
    name: &str,
    members: &[AccountId],
    limit: usize,
) -> Result<Vec<AccountId>, GroupError> {
    check_name(name)?;
    let members = distinct(members)?;
    if members.contains(&creator) {
        return Err(GroupError::Invalid(
            "do not list yourself among the members",
        ));
    }
    if members.len() + 1 > limit {
        return Err(GroupError::Full { limit });
    }
    Ok(members)
}

/// Applies `op` by `actor` to `state`. On success `state` is the new state
/// and the result lists the events to deliver, in order.
pub fn apply(
    state: &mut GroupState,
    actor: AccountId,
    op: GroupOp,
    limit: usize,
) -> Result<Vec<GroupChange>, GroupError> {
    if op == GroupOp::Join {
        return join(state, actor, limit);
    }
    let role = state.role(actor).ok_or(GroupError::NotMember)?;
    if op == GroupOp::Leave {
        return Ok(leave(state, actor));
    }
    if !role.is_admin() {
        return Err(GroupError::NotAdmin);
    }
    match op {
        GroupOp::Edit(edit) => edit_info(state, edit),
        GroupOp::Add(accounts) => add(state, accounts, limit),
        GroupOp::Remove(accounts) => remove(state, accounts),
        GroupOp::Promote(accounts) => set_roles(state, accounts, true),
        GroupOp::Demote(accounts) => set_roles(state, accounts, false),
        GroupOp::ResetInvite => Ok(vec![GroupChange::InviteReset]),
        GroupOp::SetTimer(seconds) => {
            if !crate::chats::valid_timer(seconds) {
                return Err(GroupError::Invalid(
                    "timers are 0, 86400, 604800 or 7776000 seconds",
                ));
            }
            if seconds == state.timer_s {
                return Ok(Vec::new());
            }
            state.timer_s = seconds;
            Ok(vec![GroupChange::Timer { seconds }])
        }
        GroupOp::Leave | GroupOp::Join => unreachable!("handled above"),
    }
}

fn check_name(name: &str) -> Result<(), GroupError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(GroupError::Invalid(
            "a group name is 1 to 100 characters without control characters",
        ));
    }
    Ok(())
}

fn distinct(accounts: &[AccountId]) -> Result<Vec<AccountId>, GroupError> {
    if accounts.len() > MAX_ACCOUNTS_PER_REQUEST {
        return Err(GroupError::Invalid("at most 256 accounts per request"));
    }
    let mut out: Vec<AccountId> = Vec::with_capacity(accounts.len());
    for a in accounts {
        if out.contains(a) {
            return Err(GroupError::Invalid("an account is listed twice"));
        }
        out.push(*a);
    }
    Ok(out)
}

fn non_empty(accounts: Vec<AccountId>) -> Result<Vec<AccountId>, GroupError> {
    let accounts = distinct(&accounts)?;
    if accounts.is_empty() {
        return Err(GroupError::Invalid("list at least one account"));
    }
    Ok(accounts)
}

fn edit_info(state: &mut GroupState, edit: GroupEdit) -> Result<Vec<GroupChange>, GroupError> {
    if let Some(name) = &edit.name {
        check_name(name)?;
    }
    if let Some(d) = &edit.description
        && (d.chars().count() > MAX_DESCRIPTION_CHARS || d.contains('\0'))
    {
        return Err(GroupError::Invalid(
            "a description is at most 2048 characters",
        ));
    }
    if let Some(p) = &edit.picture
        && (p.len() > MAX_PICTURE_BYTES || p.chars().any(|c| !c.is_ascii_graphic()))
    {
        return Err(GroupError::Invalid("picture must be a media id"));
    }
    let mut changes = Vec::new();
    if let Some(name) = edit.name.filter(|n| *n != state.name) {
        state.name = name.clone();
        changes.push(GroupChange::Renamed { name });
    }
    if let Some(description) = edit.description.filter(|d| *d != state.description) {
        state.description = description.clone();
        changes.push(GroupChange::Described { description });
    }
    if let Some(p) = edit.picture {
        let picture = Some(p).filter(|p| !p.is_empty());
        if picture != state.picture {
            state.picture = picture.clone();
            changes.push(GroupChange::Picture { picture });
        }
    }
    if let Some(on) = edit.announce_only.filter(|on| *on != state.announce_only) {
        state.announce_only = on;
        changes.push(GroupChange::AnnounceOnly { on });
    }
    Ok(changes)
}

fn add(
    state: &mut GroupState,
    accounts: Vec<AccountId>,
    limit: usize,
) -> Result<Vec<GroupChange>, GroupError> {
    let accounts = non_empty(accounts)?;
    if accounts.iter().any(|a| state.role(*a).is_some()) {
        return Err(GroupError::AlreadyMember);
    }
    if state.members.len() + accounts.len() > limit {
        return Err(GroupError::Full { limit });
    }
    state
        .members
        .extend(accounts.iter().map(|a| (*a, GroupRole::Member)));
    Ok(vec![GroupChange::Added { accounts }])
}

fn remove(
    state: &mut GroupState,
    accounts: Vec<AccountId>,
) -> Result<Vec<GroupChange>, GroupError> {
    let accounts = non_empty(accounts)?;
    for a in &accounts {
        match state.role(*a) {
            None => return Err(GroupError::NotAMember(*a)),
            Some(GroupRole::Creator) => return Err(GroupError::Creator),
            Some(_) => {}
        }
    }
    state.members.retain(|(a, _)| !accounts.contains(a));
    Ok(vec![GroupChange::Removed { accounts }])
}

fn set_roles(
    state: &mut GroupState,
    accounts: Vec<AccountId>,
    promote: bool,
) -> Result<Vec<GroupChange>, GroupError> {
    let accounts = non_empty(accounts)?;
    for a in &accounts {
        match state.role(*a) {
            None => return Err(GroupError::NotAMember(*a)),
            Some(GroupRole::Creator) => return Err(GroupError::Creator),
            Some(_) => {}
        }
    }
    let role = if promote {
        GroupRole::Admin
    } else {
        GroupRole::Member
    };
    let changed: Vec<AccountId> = accounts
        .into_iter()
        .filter(|a| state.role(*a) != Some(role))
        .collect();
    for a in &changed {
        state.set_role(*a, role);
    }
    Ok(match (changed.is_empty(), promote) {
        (true, _) => Vec::new(),
        (false, true) => vec![GroupChange::Promoted { accounts: changed }],
        (false, false) => vec![GroupChange::Demoted { accounts: changed }],
    })
}

/// The actor leaves. If no admin remains, the longest-standing member
/// becomes one, so a group is never left without anyone to run it.
fn leave(state: &mut GroupState, actor: AccountId) -> Vec<GroupChange> {
    state.members.retain(|(a, _)| *a != actor);
    let mut changes = vec![GroupChange::Left];
    if !state.members.iter().any(|(_, r)| r.is_admin())
        && let Some((heir, role)) = state.members.first_mut()
    {
        *role = GroupRole::Admin;
        changes.push(GroupChange::Promoted {
            accounts: vec![*heir],
        });
    }
    changes
}

fn join(
    state: &mut GroupState,
    actor: AccountId,
    limit: usize,
) -> Result<Vec<GroupChange>, GroupError> {
    if state.role(actor).is_some() {
        return Err(GroupError::AlreadyMember);
    }
    if state.members.len() >= limit {
        return Err(GroupError::Full { limit });
    }
    state.members.push((actor, GroupRole::Member));
    Ok(vec![GroupChange::Joined])
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AccountId = AccountId(1);
    const B: AccountId = AccountId(2);
    const C: AccountId = AccountId(3);
    const D: AccountId = AccountId(4);

    fn group() -> GroupState {
        GroupState {
            name: "hikers".into(),
            description: String::new(),
            picture: None,
            announce_only: false,
            timer_s: 0,
            members: vec![
                (A, GroupRole::Creator),
                (B, GroupRole::Admin),
                (C, GroupRole::Member),
            ],
        }
    }

    #[test]
    fn members_cannot_administer() {
        let mut g = group();
        let before = g.clone();
        for op in [
            GroupOp::Add(vec![D]),
            GroupOp::Remove(vec![B]),
            GroupOp::Promote(vec![C]),
            GroupOp::ResetInvite,
            GroupOp::Edit(GroupEdit {
                name: Some("x".into()),
                ..GroupEdit::default()
            }),
        ] {
            assert_eq!(apply(&mut g, C, op, 10), Err(GroupError::NotAdmin));
        }
        assert_eq!(g, before);
    }

    #[test]
    fn outsiders_can_only_join() {
        let mut g = group();
        assert_eq!(
            apply(&mut g, D, GroupOp::Leave, 10),
            Err(GroupError::NotMember)
        );
        assert_eq!(
            apply(&mut g, D, GroupOp::Add(vec![D]), 10),
            Err(GroupError::NotMember)
        );
        assert_eq!(
            apply(&mut g, D, GroupOp::Join, 10),
            Ok(vec![GroupChange::Joined])
        );
        assert_eq!(g.role(D), Some(GroupRole::Member));
        assert_eq!(
            apply(&mut g, D, GroupOp::Join, 10),
            Err(GroupError::AlreadyMember)
        );
    }

    #[test]
    fn the_creator_is_untouchable_by_admins() {
        let mut g = group();
        assert_eq!(
            apply(&mut g, B, GroupOp::Remove(vec![A]), 10),
            Err(GroupError::Creator)
        );
        assert_eq!(
            apply(&mut g, B, GroupOp::Demote(vec![A]), 10),
            Err(GroupError::Creator)
        );
        assert_eq!(
            apply(&mut g, A, GroupOp::Demote(vec![B]), 10),
            Ok(vec![GroupChange::Demoted { accounts: vec![B] }])
        );
        assert_eq!(g.role(B), Some(GroupRole::Member));
    }

    #[test]
    fn the_size_limit_counts_everyone() {
        let mut g = group();
        assert_eq!(
            apply(&mut g, A, GroupOp::Add(vec![D, AccountId(5)]), 4),
            Err(GroupError::Full { limit: 4 })
        );
        assert_eq!(g.members.len(), 3);
        assert!(apply(&mut g, A, GroupOp::Add(vec![D]), 4).is_ok());
        assert_eq!(
            apply(&mut g, AccountId(9), GroupOp::Join, 4),
            Err(GroupError::Full { limit: 4 })
        );
        assert_eq!(
            check_new(A, "x", &[B, C, D], 3),
            Err(GroupError::Full { limit: 3 })
        );
    }

    #[test]
    fn a_group_is_never_left_without_an_admin() {
        let mut g = group();
        apply(&mut g, A, GroupOp::Leave, 10).unwrap();
        assert_eq!(g.role(B), Some(GroupRole::Admin));
        let changes = apply(&mut g, B, GroupOp::Leave, 10).unwrap();
        assert_eq!(
            changes,
            vec![
                GroupChange::Left,
                GroupChange::Promoted { accounts: vec![C] }
            ]
        );
        assert_eq!(g.role(C), Some(GroupRole::Admin));
    }

    #[test]
    fn edits_report_only_what_changed() {
        let mut g = group();
        let edit = GroupEdit {
            name: Some("hikers".into()),
            description: Some("Sunday walks".into()),
            picture: Some(String::new()),
            announce_only: Some(true),
        };
        assert_eq!(
            apply(&mut g, B, GroupOp::Edit(edit), 10).unwrap(),
            vec![
                GroupChange::Described {
                    description: "Sunday walks".into()
                },
                GroupChange::AnnounceOnly { on: true },
            ]
        );
        assert_eq!(g.may_send(C), Err(GroupError::AnnounceOnly));
        assert_eq!(g.may_send(B), Ok(()));
        assert_eq!(g.may_send(D), Err(GroupError::NotMember));
        let bad = GroupEdit {
            name: Some(String::new()),
            ..GroupEdit::default()
        };
        assert!(matches!(
            apply(&mut g, B, GroupOp::Edit(bad), 10),
            Err(GroupError::Invalid(_))
        ));
    }

    #[test]
    fn lists_must_be_distinct_and_members_real() {
        let mut g = group();
        assert!(matches!(
            apply(&mut g, A, GroupOp::Add(vec![D, D]), 10),
            Err(GroupError::Invalid(_))
        ));
        assert!(matches!(
            apply(&mut g, A, GroupOp::Add(vec![]), 10),
            Err(GroupError::Invalid(_))
        ));
        assert_eq!(
            apply(&mut g, A, GroupOp::Remove(vec![D]), 10),
            Err(GroupError::NotAMember(D))
        );
        assert_eq!(
            apply(&mut g, A, GroupOp::Add(vec![C]), 10),
            Err(GroupError::AlreadyMember)
        );
        assert!(matches!(
            check_new(A, "x", &[A], 10),
            Err(GroupError::Invalid(_))
        ));
    }
}
