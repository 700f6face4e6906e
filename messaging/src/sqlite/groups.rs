//! Groups in SQLite: load a group's state, let [`crate::groups`] decide,
//! persist the difference and queue the events, all in one writer job.

use super::chats::{find_sent, record_sent, sent_ts};
use super::{Batch, NewEnvelope, account_exists, enqueue, to_i64, to_u64};
use crate::chats::{Chat, check_amend, message_expiry};
use crate::groups::{self, GroupError, GroupOp, GroupState};
use crate::store::{GroupChangeRequest, GroupSendOutcome, GroupSendRequest, GroupTarget, NewGroup};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::groups::{GroupChange, GroupEvent, GroupInfo, GroupMember, GroupRole};
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;

pub(super) const MIGRATION: &str = r#"
ALTER TABLE queue ADD COLUMN group_id INTEGER;
CREATE TABLE groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    picture TEXT,
    announce_only INTEGER NOT NULL DEFAULT 0,
    invite_code TEXT UNIQUE,
    event_seq INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE TABLE group_members (
    group_id INTEGER NOT NULL,
    account INTEGER NOT NULL,
    role INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (group_id, account)
) WITHOUT ROWID;
CREATE INDEX group_members_by_account ON group_members(account, group_id);
"#;

fn role_to_i64(r: GroupRole) -> i64 {
    match r {
        GroupRole::Member => 0,
        GroupRole::Admin => 1,
        GroupRole::Creator => 2,
    }
}

fn role_from_i64(v: i64) -> rusqlite::Result<GroupRole> {
    Ok(match v {
        0 => GroupRole::Member,
        1 => GroupRole::Admin,
        2 => GroupRole::Creator,
        _ => return Err(rusqlite::Error::IntegralValueOutOfRange(2, v)),
    })
}

/// What the rules do not need to see.
struct Meta {
    event: u64,
    created_ms: u64,
    invite_code: Option<String>,
}

fn load(conn: &Connection, group: GroupId) -> rusqlite::Result<Option<(GroupState, Meta)>> {
    let row = conn
        .prepare_cached(
            "SELECT name, description, picture, announce_only, event_seq, created_ms, invite_code,
                    timer_s
             FROM groups WHERE id = ?1",
        )?
        .query_row([to_i64(group.0)], |r| {
            Ok((
                GroupState {
                    name: r.get(0)?,
                    description: r.get(1)?,
                    picture: r.get(2)?,
                    announce_only: r.get::<_, i64>(3)? != 0,
                    timer_s: to_u64(r.get(7)?),
                    members: Vec::new(),
                },
                Meta {
                    event: to_u64(r.get(4)?),
                    created_ms: to_u64(r.get(5)?),
                    invite_code: r.get(6)?,
                },
            ))
        })
        .optional()?;
    let Some((mut state, meta)) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT account, role FROM group_members WHERE group_id = ?1 ORDER BY pos",
    )?;
    let rows = stmt.query_map([to_i64(group.0)], |r| {
        Ok((AccountId(to_u64(r.get(0)?)), role_from_i64(r.get(1)?)?))
    })?;
    state.members = rows.collect::<rusqlite::Result<_>>()?;
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
pub(super) fn members(
    conn: &Connection,
    group: GroupId,
) -> rusqlite::Result<Option<Vec<AccountId>>> {
    Ok(load(conn, group)?.map(|(state, _)| state.members.iter().map(|(a, _)| *a).collect()))
}

/// The group as `viewer` sees it, if `viewer` is a member.
pub(super) fn visible(
    conn: &Connection,
    viewer: AccountId,
    group: GroupId,
) -> rusqlite::Result<Option<GroupInfo>> {
    Ok(load(conn, group)?
        .filter(|(state, _)| state.role(viewer).is_some())
        .map(|(state, meta)| info(group, &state, &meta)))
}

pub(super) fn of_account(
    conn: &Connection,
    account: AccountId,
) -> rusqlite::Result<Vec<GroupInfo>> {
    let ids: Vec<i64> = conn
        .prepare_cached("SELECT group_id FROM group_members WHERE account = ?1 ORDER BY group_id")?
        .query_map([to_i64(account.0)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let group = GroupId(to_u64(id));
        if let Some((state, meta)) = load(conn, group)? {
            out.push(info(group, &state, &meta));
        }
    }
    Ok(out)
}

fn check_accounts(
    conn: &Connection,
    accounts: &[AccountId],
) -> rusqlite::Result<Result<(), GroupError>> {
    for a in accounts {
        if !account_exists(conn, *a)? {
            return Ok(Err(GroupError::UnknownAccount(*a)));
        }
    }
    Ok(Ok(()))
}

pub(super) fn create(
    conn: &Connection,
    batch: &mut Batch,
    new: NewGroup,
) -> rusqlite::Result<Result<GroupInfo, GroupError>> {
    let members = match groups::check_new(new.creator, &new.name, &new.members, new.limit) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = check_accounts(conn, &members)? {
        return Ok(Err(e));
    }
    let id: i64 = conn
        .prepare_cached("INSERT INTO groups (name, created_ms) VALUES (?1, ?2) RETURNING id")?
        .query_row(params![new.name, to_i64(new.now_ms)], |r| r.get(0))?;
    let group = GroupId(to_u64(id));
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
    persist_members(
        conn,
        group,
        &GroupState {
            members: Vec::new(),
            ..state.clone()
        },
        &state,
    )?;
    let mut all = vec![new.creator];
    all.extend(members);
    let change = GroupChange::Created {
        name: new.name,
        members: all,
    };
    let event = emit(
        conn,
        batch,
        group,
        new.creator,
        vec![change],
        &state,
        &[],
        new.now_ms,
        new.expires_at_ms,
    )?;
    let meta = Meta {
        event,
        created_ms: new.now_ms,
        invite_code: None,
    };
    Ok(Ok(info(group, &state, &meta)))
}

fn resolve(conn: &Connection, target: &GroupTarget) -> rusqlite::Result<Option<GroupId>> {
    match target {
        GroupTarget::Id(id) => Ok(Some(*id)),
        GroupTarget::InviteCode(code) => Ok(conn
            .prepare_cached("SELECT id FROM groups WHERE invite_code = ?1")?
            .query_row([code], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|id| GroupId(to_u64(id)))),
    }
}

pub(super) fn change(
    conn: &Connection,
    batch: &mut Batch,
    req: GroupChangeRequest,
) -> rusqlite::Result<Result<GroupInfo, GroupError>> {
    let Some(group) = resolve(conn, &req.target)? else {
        return Ok(Err(GroupError::NotMember));
    };
    let Some((before, mut meta)) = load(conn, group)? else {
        return Ok(Err(GroupError::NotMember));
    };
    if let GroupOp::Add(accounts) = &req.op
        && let Err(e) = check_accounts(conn, accounts)?
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
    persist_members(conn, group, &before, &after)?;
    conn.prepare_cached(
        "UPDATE groups SET name = ?2, description = ?3, picture = ?4, announce_only = ?5,
                           timer_s = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        to_i64(group.0),
        after.name,
        after.description,
        after.picture,
        i64::from(after.announce_only),
        to_i64(after.timer_s)
    ])?;
    if req.op == GroupOp::ResetInvite {
        conn.prepare_cached("UPDATE groups SET invite_code = ?2 WHERE id = ?1")?
            .execute(params![to_i64(group.0), req.new_code])?;
    }
    // Whoever left the group still hears about it, once.
    let gone: Vec<AccountId> = before
        .members
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| after.role(*a).is_none())
        .collect();
    meta.event = emit(
        conn,
        batch,
        group,
        req.actor,
        changes,
        &after,
        &gone,
        req.now_ms,
        req.expires_at_ms,
    )?;
    Ok(Ok(info(group, &after, &meta)))
}

pub(super) fn invite_code(
    conn: &Connection,
    actor: AccountId,
    group: GroupId,
    fresh: String,
) -> rusqlite::Result<Result<String, GroupError>> {
    let Some((state, meta)) = load(conn, group)? else {
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
    conn.prepare_cached("UPDATE groups SET invite_code = ?2 WHERE id = ?1")?
        .execute(params![to_i64(group.0), fresh])?;
    Ok(Ok(fresh))
}

/// Writes the membership difference between two states of a group.
fn persist_members(
    conn: &Connection,
    group: GroupId,
    before: &GroupState,
    after: &GroupState,
) -> rusqlite::Result<()> {
    let g = to_i64(group.0);
    for (account, _) in &before.members {
        if after.role(*account).is_none() {
            conn.prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND account = ?2")?
                .execute(params![g, to_i64(account.0)])?;
        }
    }
    let mut next_pos: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(pos), 0) + 1 FROM group_members WHERE group_id = ?1")?
        .query_row([g], |r| r.get(0))?;
    for (account, role) in &after.members {
        match before.role(*account) {
            Some(old) if old == *role => {}
            Some(_) => {
                conn.prepare_cached(
                    "UPDATE group_members SET role = ?3 WHERE group_id = ?1 AND account = ?2",
                )?
                .execute(params![g, to_i64(account.0), role_to_i64(*role)])?;
            }
            None => {
                conn.prepare_cached(
                    "INSERT INTO group_members (group_id, account, role, pos) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![g, to_i64(account.0), role_to_i64(*role), next_pos])?;
                next_pos += 1;
            }
        }
    }
    Ok(())
}

/// Numbers the changes and queues each as a `group_event` envelope for
/// every device of the members and of `gone`. Returns the last event number.
#[allow(clippy::too_many_arguments)]
fn emit(
    conn: &Connection,
    batch: &mut Batch,
    group: GroupId,
    by: AccountId,
    changes: Vec<GroupChange>,
    state: &GroupState,
    gone: &[AccountId],
    now_ms: u64,
    expires_ms: u64,
) -> rusqlite::Result<u64> {
    let mut devices = Vec::new();
    for account in state.members.iter().map(|(a, _)| a).chain(gone) {
        devices.extend(batch.devices_of(conn, *account)?);
    }
    let mut last: u64 = conn
        .prepare_cached("SELECT event_seq FROM groups WHERE id = ?1")?
        .query_row([to_i64(group.0)], |r| r.get::<_, i64>(0))
        .map(to_u64)?;
    for change in changes {
        last += 1;
        let event = GroupEvent {
            group,
            event: last,
            by,
            at: now_ms,
            change,
        };
        let json = serde_json::to_vec(&event)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let msg = event_msg_id(group, last);
        for device in &devices {
            enqueue(
                conn,
                batch,
                NewEnvelope {
                    device: *device,
                    kind: EnvelopeKind::GroupEvent,
                    from: by,
                    from_device: DeviceId(0),
                    msg: &msg,
                    ts: now_ms,
                    expires_ms,
                    payload: Some(json.clone()),
                    group: Some(group),
                    ref_msg: None,
                },
            )?;
        }
    }
    conn.prepare_cached("UPDATE groups SET event_seq = ?2 WHERE id = ?1")?
        .execute(params![to_i64(group.0), to_i64(last)])?;
    Ok(last)
}

/// The message id of a group event: `g<group>.<event>`.
fn event_msg_id(group: GroupId, event: u64) -> ClientMsgId {
    ClientMsgId::new(format!("g{}.{}", group.0, event))
        .expect("`g`, digits and `.` are valid message id characters")
}

pub(super) fn send(
    conn: &Connection,
    batch: &mut Batch,
    req: GroupSendRequest,
) -> rusqlite::Result<GroupSendOutcome> {
    if let Some(ts) = sent_ts(conn, req.from_device, &req.msg)? {
        return Ok(GroupSendOutcome::Duplicate { ts });
    }
    let Some((state, _)) = load(conn, req.group)? else {
        return Ok(GroupSendOutcome::Refused(GroupError::NotMember));
    };
    if let Err(e) = state.may_send(req.from) {
        return Ok(GroupSendOutcome::Refused(e));
    }
    if let Some(orig) = &req.edit_of {
        let found = find_sent(conn, req.from, orig)?;
        let chat = Some(Chat::Group(req.group));
        if let Err(e) = check_amend(found, chat, req.now_ms, req.edit_window_ms) {
            return Ok(GroupSendOutcome::Amend(e));
        }
    }
    let chat = Chat::Group(req.group);
    record_sent(conn, req.from_device, &req.msg, req.now_ms, chat)?;
    let expires_ms = message_expiry(req.now_ms, req.expires_at_ms, state.timer_s);
    let mut seen = BTreeSet::new();
    for (account, _) in &state.members {
        for device in batch.devices_of(conn, *account)? {
            if device == req.from_device || !seen.insert(device) {
                continue;
            }
            enqueue(
                conn,
                batch,
                NewEnvelope {
                    device,
                    kind: EnvelopeKind::Message,
                    from: req.from,
                    from_device: req.from_device,
                    msg: &req.msg,
                    ts: req.now_ms,
                    expires_ms,
                    payload: Some(req.payload.clone()),
                    group: Some(req.group),
                    ref_msg: req.edit_of.clone(),
                },
            )?;
        }
    }
    Ok(GroupSendOutcome::Stored { ts: req.now_ms })
}
