//! Groups in PostgreSQL: load a group's state (locking its row), let
//! [`crate::groups`] decide, persist the difference and queue the events.
//!
//! Changes lock the group row `FOR UPDATE`, so two admins' changes apply one
//! after the other and event numbers never repeat; sends lock it `FOR
//! SHARE`, so a removal waits for sends in flight and later sends see it.

use super::chats::{find_sent, record_sent};
use super::messages::{account_exists, duplicate};
use super::{Batch, NewEnvelope, PgError, PgResult, Tx, execute, query, query_opt, to_i64, to_u64};
use crate::chats::{Chat, check_amend, message_expiry};
use crate::groups::{self, GroupError, GroupOp, GroupState};
use crate::store::{GroupChangeRequest, GroupSendOutcome, GroupSendRequest, GroupTarget, NewGroup};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::groups::{GroupChange, GroupEvent, GroupInfo, GroupMember, GroupRole};
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId};

fn role_to_i16(r: GroupRole) -> i16 {
    match r {
        GroupRole::Member => 0,
        GroupRole::Admin => 1,
        GroupRole::Creator => 2,
    }
}

fn role_from_i16(v: i16) -> PgResult<GroupRole> {
    Ok(match v {
        0 => GroupRole::Member,
        1 => GroupRole::Admin,
        2 => GroupRole::Creator,
        _ => return Err(PgError::Data(format!("unknown group role {v}"))),
    })
}

/// What the rules do not need to see.
struct Meta {
    event: u64,
    created_ms: u64,
    invite_code: Option<String>,
}

/// How a group row is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    Share,
    Update,
}

async fn load(tx: &Tx<'_>, group: GroupId, lock: Lock) -> PgResult<Option<(GroupState, Meta)>> {
    let sql = match lock {
        Lock::None => {
            "SELECT name, description, picture, announce_only, event_seq, created_ms, invite_code,
                    timer_s FROM chat_groups WHERE id = $1"
        }
        Lock::Share => {
            "SELECT name, description, picture, announce_only, event_seq, created_ms, invite_code,
                    timer_s FROM chat_groups WHERE id = $1 FOR SHARE"
        }
        Lock::Update => {
            "SELECT name, description, picture, announce_only, event_seq, created_ms, invite_code,
                    timer_s FROM chat_groups WHERE id = $1 FOR UPDATE"
        }
    };
    let Some(r) = query_opt(tx, sql, &[&to_i64(group.0)]).await? else {
        return Ok(None);
    };
    let mut state = GroupState {
        name: r.get(0),
        description: r.get(1),
        picture: r.get(2),
        announce_only: r.get(3),
        timer_s: to_u64(r.get(7)),
        members: Vec::new(),
    };
    let meta = Meta {
        event: to_u64(r.get(4)),
        created_ms: to_u64(r.get(5)),
        invite_code: r.get(6),
    };
    let rows = query(
        tx,
        "SELECT account, role FROM group_members WHERE group_id = $1 ORDER BY pos",
        &[&to_i64(group.0)],
    )
    .await?;
    for r in rows {
        state
            .members
            .push((AccountId(to_u64(r.get(0))), role_from_i16(r.get(1))?));
    }
    Ok(Some((state, meta)))
}

fn info(group: GroupId, state: &GroupState, meta: &Meta) -> GroupInfo {
    GroupInfo {
        group,
        name: state.name.clone(),
        description: state.description.clone(),
        picture: state.picture.clone(),
        announce_only: state.announce_only,
        members: state
            .members
            .iter()
            .map(|(account, role)| GroupMember {
                account: *account,
                role: *role,
            })
            .collect(),
        event: meta.event,
        created_at: meta.created_ms,
    }
}

/// The members of a group, if it exists.
pub(super) async fn members(tx: &Tx<'_>, group: GroupId) -> PgResult<Option<Vec<AccountId>>> {
    Ok(load(tx, group, Lock::None)
        .await?
        .map(|(state, _)| state.members.iter().map(|(a, _)| *a).collect()))
}

/// The group as `viewer` sees it, if `viewer` is a member.
pub(super) async fn visible(
    tx: &Tx<'_>,
    viewer: AccountId,
    group: GroupId,
) -> PgResult<Option<GroupInfo>> {
    Ok(load(tx, group, Lock::None)
        .await?
        .filter(|(state, _)| state.role(viewer).is_some())
        .map(|(state, meta)| info(group, &state, &meta)))
}

pub(super) async fn of_account(tx: &Tx<'_>, account: AccountId) -> PgResult<Vec<GroupInfo>> {
    let ids = query(
        tx,
        "SELECT group_id FROM group_members WHERE account = $1 ORDER BY group_id",
        &[&to_i64(account.0)],
    )
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for r in ids {
        let group = GroupId(to_u64(r.get(0)));
        if let Some((state, meta)) = load(tx, group, Lock::None).await? {
            out.push(info(group, &state, &meta));
        }
    }
    Ok(out)
}

async fn check_accounts(tx: &Tx<'_>, accounts: &[AccountId]) -> PgResult<Result<(), GroupError>> {
    for a in accounts {
        if !account_exists(tx, *a).await? {
            return Ok(Err(GroupError::UnknownAccount(*a)));
        }
    }
    Ok(Ok(()))
}

pub(super) async fn create(
    tx: &Tx<'_>,
    batch: &mut Batch,
    new: &NewGroup,
) -> PgResult<Result<GroupInfo, GroupError>> {
    let members = match groups::check_new(new.creator, &new.name, &new.members, new.limit) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = check_accounts(tx, &members).await? {
        return Ok(Err(e));
    }
    let row = query(
        tx,
        "INSERT INTO chat_groups (name, created_ms) VALUES ($1, $2) RETURNING id",
        &[&new.name, &to_i64(new.now_ms)],
    )
    .await?;
    let group = GroupId(to_u64(row[0].get(0)));
    let mut state = GroupState {
        name: new.name.clone(),
        description: String::new(),
        picture: None,
        announce_only: false,
        timer_s: 0,
        members: vec![(new.creator, GroupRole::Creator)],
    };
    state
        .members
        .extend(members.iter().map(|a| (*a, GroupRole::Member)));
    let empty = GroupState {
        members: Vec::new(),
        ..state.clone()
    };
    persist_members(tx, group, &empty, &state).await?;
    let mut all = vec![new.creator];
    all.extend(members);
    let change = GroupChange::Created {
        name: new.name.clone(),
        members: all,
    };
    let emitted = Emit {
        group,
        by: new.creator,
        changes: vec![change],
        now_ms: new.now_ms,
        expires_ms: new.expires_at_ms,
    };
    let event = emit(tx, batch, emitted, &state, &[]).await?;
    let meta = Meta {
        event,
        created_ms: new.now_ms,
        invite_code: None,
    };
    Ok(Ok(info(group, &state, &meta)))
}

async fn resolve(tx: &Tx<'_>, target: &GroupTarget) -> PgResult<Option<GroupId>> {
    match target {
        GroupTarget::Id(id) => Ok(Some(*id)),
        GroupTarget::InviteCode(code) => Ok(query_opt(
            tx,
            "SELECT id FROM chat_groups WHERE invite_code = $1",
            &[code],
        )
        .await?
        .map(|r| GroupId(to_u64(r.get(0))))),
    }
}

pub(super) async fn change(
    tx: &Tx<'_>,
    batch: &mut Batch,
    req: &GroupChangeRequest,
) -> PgResult<Result<GroupInfo, GroupError>> {
    let Some(group) = resolve(tx, &req.target).await? else {
        return Ok(Err(GroupError::NotMember));
    };
    let Some((before, mut meta)) = load(tx, group, Lock::Update).await? else {
        return Ok(Err(GroupError::NotMember));
    };
    if let GroupTarget::InviteCode(code) = &req.target
        && meta.invite_code.as_ref() != Some(code)
    {
        // The code was reset while we waited for the lock.
        return Ok(Err(GroupError::NotMember));
    }
    if let GroupOp::Add(accounts) = &req.op
        && let Err(e) = check_accounts(tx, accounts).await?
    {
        return Ok(Err(e));
    }
    let mut after = before.clone();
    let changes = match groups::apply(&mut after, req.actor, req.op.clone(), req.limit) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    if changes.is_empty() {
        return Ok(Ok(info(group, &after, &meta)));
    }
    persist_members(tx, group, &before, &after).await?;
    execute(
        tx,
        "UPDATE chat_groups SET name = $2, description = $3, picture = $4, announce_only = $5,
                                timer_s = $6
         WHERE id = $1",
        &[
            &to_i64(group.0),
            &after.name,
            &after.description,
            &after.picture,
            &after.announce_only,
            &to_i64(after.timer_s),
        ],
    )
    .await?;
    if req.op == GroupOp::ResetInvite {
        execute(
            tx,
            "UPDATE chat_groups SET invite_code = $2 WHERE id = $1",
            &[&to_i64(group.0), &req.new_code],
        )
        .await?;
    }
    // Whoever left the group still hears about it, once.
    let gone: Vec<AccountId> = before
        .members
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| after.role(*a).is_none())
        .collect();
    let emitted = Emit {
        group,
        by: req.actor,
        changes,
        now_ms: req.now_ms,
        expires_ms: req.expires_at_ms,
    };
    meta.event = emit(tx, batch, emitted, &after, &gone).await?;
    Ok(Ok(info(group, &after, &meta)))
}

pub(super) async fn invite_code(
    tx: &Tx<'_>,
    actor: AccountId,
    group: GroupId,
    fresh: &str,
) -> PgResult<Result<String, GroupError>> {
    let Some((state, meta)) = load(tx, group, Lock::Update).await? else {
        return Ok(Err(GroupError::NotMember));
    };
    match state.role(actor) {
        None => return Ok(Err(GroupError::NotMember)),
        Some(r) if !r.is_admin() => return Ok(Err(GroupError::NotAdmin)),
        Some(_) => {}
    }
    if let Some(code) = meta.invite_code {
        return Ok(Ok(code));
    }
    execute(
        tx,
        "UPDATE chat_groups SET invite_code = $2 WHERE id = $1",
        &[&to_i64(group.0), &fresh],
    )
    .await?;
    Ok(Ok(fresh.to_owned()))
}

/// Writes the membership difference between two states of a group.
async fn persist_members(
    tx: &Tx<'_>,
    group: GroupId,
    before: &GroupState,
    after: &GroupState,
) -> PgResult<()> {
    let g = to_i64(group.0);
    for (account, _) in &before.members {
        if after.role(*account).is_none() {
            execute(
                tx,
                "DELETE FROM group_members WHERE group_id = $1 AND account = $2",
                &[&g, &to_i64(account.0)],
            )
            .await?;
        }
    }
    let row = query(
        tx,
        "SELECT COALESCE(MAX(pos), 0) + 1 FROM group_members WHERE group_id = $1",
        &[&g],
    )
    .await?;
    let mut next_pos: i64 = row[0].get(0);
    for (account, role) in &after.members {
        match before.role(*account) {
            Some(old) if old == *role => {}
            Some(_) => {
                execute(
                    tx,
                    "UPDATE group_members SET role = $3 WHERE group_id = $1 AND account = $2",
                    &[&g, &to_i64(account.0), &role_to_i16(*role)],
                )
                .await?;
            }
            None => {
                execute(
                    tx,
                    "INSERT INTO group_members (group_id, account, role, pos) VALUES ($1, $2, $3, $4)",
                    &[&g, &to_i64(account.0), &role_to_i16(*role), &next_pos],
                )
                .await?;
                next_pos += 1;
            }
        }
    }
    Ok(())
}

/// Current devices of several accounts, in the order of `accounts`.
async fn devices_of_all(tx: &Tx<'_>, accounts: &[AccountId]) -> PgResult<Vec<DeviceId>> {
    let ids: Vec<i64> = accounts.iter().map(|a| to_i64(a.0)).collect();
    let rows = query(
        tx,
        "SELECT d.id FROM unnest($1::int8[]) WITH ORDINALITY AS a(id, n)
         JOIN devices d ON d.account_id = a.id AND d.revoked_ms IS NULL
         ORDER BY a.n, d.id",
        &[&ids],
    )
    .await?;
    Ok(rows.iter().map(|r| DeviceId(to_u64(r.get(0)))).collect())
}

/// The changes of one group operation, before they are numbered.
struct Emit {
    group: GroupId,
    by: AccountId,
    changes: Vec<GroupChange>,
    now_ms: u64,
    expires_ms: u64,
}

/// Numbers the changes and queues each as a `group_event` envelope for
/// every device of the members and of `gone`. Returns the last event number.
async fn emit(
    tx: &Tx<'_>,
    batch: &mut Batch,
    e: Emit,
    state: &GroupState,
    gone: &[AccountId],
) -> PgResult<u64> {
    let accounts: Vec<AccountId> = state
        .members
        .iter()
        .map(|(a, _)| *a)
        .chain(gone.iter().copied())
        .collect();
    let devices = devices_of_all(tx, &accounts).await?;
    let row = query(
        tx,
        "SELECT event_seq FROM chat_groups WHERE id = $1",
        &[&to_i64(e.group.0)],
    )
    .await?;
    let mut last = to_u64(row[0].get(0));
    for change in e.changes {
        last += 1;
        let event = GroupEvent {
            group: e.group,
            event: last,
            by: e.by,
            at: e.now_ms,
            change,
        };
        let json = serde_json::to_vec(&event).map_err(|e| PgError::Data(e.to_string()))?;
        let msg = event_msg_id(e.group, last);
        for device in &devices {
            batch.enqueue(NewEnvelope {
                device: *device,
                kind: EnvelopeKind::GroupEvent,
                from: e.by,
                from_device: DeviceId(0),
                msg: msg.clone(),
                ts: e.now_ms,
                expires_ms: e.expires_ms,
                payload: Some(json.clone()),
                group: Some(e.group),
                ref_msg: None,
            });
        }
    }
    execute(
        tx,
        "UPDATE chat_groups SET event_seq = $2 WHERE id = $1",
        &[&to_i64(e.group.0), &to_i64(last)],
    )
    .await?;
    Ok(last)
}

/// The message id of a group event: `g<group>.<event>`.
fn event_msg_id(group: GroupId, event: u64) -> ClientMsgId {
    ClientMsgId::new(format!("g{}.{}", group.0, event))
        .expect("`g`, digits and `.` are valid message id characters")
}

pub(super) async fn send(
    tx: &Tx<'_>,
    batch: &mut Batch,
    req: &GroupSendRequest,
) -> PgResult<GroupSendOutcome> {
    if let Some(ts) = duplicate(tx, req.from_device, &req.msg).await? {
        return Ok(GroupSendOutcome::Duplicate { ts });
    }
    let Some((state, _)) = load(tx, req.group, Lock::Share).await? else {
        return Ok(GroupSendOutcome::Refused(GroupError::NotMember));
    };
    if let Err(e) = state.may_send(req.from) {
        return Ok(GroupSendOutcome::Refused(e));
    }
    let chat = Chat::Group(req.group);
    if let Some(orig) = &req.edit_of {
        let found = find_sent(tx, req.from, orig).await?;
        if let Err(e) = check_amend(found, Some(chat), req.now_ms, req.edit_window_ms) {
            return Ok(GroupSendOutcome::Amend(e));
        }
    }
    if let Some(ts) = record_sent(tx, req.from_device, &req.msg, req.now_ms, chat).await? {
        return Ok(GroupSendOutcome::Duplicate { ts });
    }
    let expires_ms = message_expiry(req.now_ms, req.expires_at_ms, state.timer_s);
    let accounts: Vec<AccountId> = state.members.iter().map(|(a, _)| *a).collect();
    let mut seen = std::collections::BTreeSet::new();
    for device in devices_of_all(tx, &accounts).await? {
        if device == req.from_device || !seen.insert(device) {
            continue;
        }
        batch.enqueue(NewEnvelope {
            device,
            kind: EnvelopeKind::Message,
            from: req.from,
            from_device: req.from_device,
            msg: req.msg.clone(),
            ts: req.now_ms,
            expires_ms,
            payload: Some(req.payload.clone()),
            group: Some(req.group),
            ref_msg: req.edit_of.clone(),
        });
    }
    Ok(GroupSendOutcome::Stored { ts: req.now_ms })
}
