// Group chats: create, members and admins, leave, and the `group_event`
// envelopes that keep every member's copy in step (docs/protocol.md,
// "Groups"). A group's chat is stored under the key `-group` in the same
// `chats` / `messages` stores as 1:1 chats (whose keys are the peer's
// account, always positive). Messages themselves go through the client's
// normal send path, encrypted with Megolm (crypto.ts).

import * as db from './db';
import type { Conn, Frame } from './ws';

export type Role = 'creator' | 'admin' | 'member';

export interface Member {
  account: number;
  role: Role;
}

/** What the group code needs from the client. */
export interface Host {
  need(): Conn;
  me(): number;
  nameOf(account: number): string;
  learnName(account: number, name: string): Promise<void>;
  refresh(chat: number): Promise<void>;
  openChat(chat: number): Promise<void>;
}

export const chatOf = (group: number) => -group;
export const groupOf = (chat: number): number | null => (chat < 0 ? -chat : null);

export class Groups {
  constructor(private host: Host) {}

  /** Creates a group with the accounts behind `phones` and opens it. */
  async create(name: string, phones: string[]): Promise<number> {
    const conn = this.host.need();
    const members: number[] = [];
    for (const phone of phones) {
      const account = (await conn.request({ type: 'lookup', phone })).account as number;
      await this.host.learnName(account, phone);
      members.push(account);
    }
    const info = await conn.request({ type: 'group_create', name, members });
    const chat = await this.keep(info);
    await this.host.openChat(chat);
    return chat;
  }

  async add(group: number, phone: string) {
    const conn = this.host.need();
    const account = (await conn.request({ type: 'lookup', phone })).account as number;
    await this.host.learnName(account, phone);
    await this.keep(await conn.request({ type: 'group_add', group, accounts: [account] }));
  }

  async remove(group: number, account: number) {
    await this.keep(await this.host.need().request({ type: 'group_remove', group, accounts: [account] }));
  }

  async setAdmin(group: number, account: number, admin: boolean) {
    const type = admin ? 'group_promote' : 'group_demote';
    await this.keep(await this.host.need().request({ type, group, accounts: [account] }));
  }

  async leave(group: number) {
    await this.host.need().request({ type: 'group_leave', group });
    await this.markLeft(group);
  }

  /** Stores the server's view of a group (a `group` reply); returns its chat key. */
  private async keep(reply: Frame): Promise<number> {
    const info = reply.group as Frame;
    const chat = chatOf(info.group);
    const c = (await db.chatGet(chat)) ?? newGroupChat(info.group, info.name);
    c.name = info.name;
    c.members = (info.members as Member[]).map((m) => ({ account: m.account, role: m.role }));
    c.left = false;
    await db.chatPut(c);
    await this.host.refresh(chat);
    return chat;
  }

  private async markLeft(group: number) {
    const c = await db.chatGet(chatOf(group));
    if (!c) return;
    c.left = true;
    c.members = (c.members ?? []).filter((m) => m.account !== this.host.me());
    await db.chatPut(c);
    await this.host.refresh(c.peer);
  }

  /** A `group_event` envelope: a line in the chat, then the current members. */
  async event(f: Frame) {
    const ev = f.event;
    if (!ev || typeof f.group !== 'number') return;
    const chat = chatOf(f.group);
    const key = `event:${f.group}:${ev.event}`;
    if (await db.messageGet(key)) return; // redelivered
    const c = (await db.chatGet(chat)) ?? newGroupChat(f.group, ev.name ?? `Group ${f.group}`);
    if (typeof ev.name === 'string') c.name = ev.name;
    if (ev.change === 'timer') c.timer = ev.seconds ?? 0;
    const text = this.describe(ev);
    const m: db.Message = { key, chat, msg: key, from: ev.by, ts: ev.at, text, mine: false, tick: 'read', system: true };
    await db.messagePut(m);
    c.lastText = text;
    c.lastTs = Math.max(c.lastTs, ev.at);
    await db.chatPut(c);
    const me = this.host.me();
    const gone = (ev.change === 'removed' && ev.accounts.includes(me)) || (ev.change === 'left' && ev.by === me);
    if (gone) await this.markLeft(f.group);
    else await this.sync(f.group);
  }

  /** Reads the group's members and roles from the server (`not_found`: no longer a member). */
  private async sync(group: number) {
    try {
      await this.keep(await this.host.need().request({ type: 'group_get', group }));
    } catch (e) {
      if ((e as { code?: string }).code === 'not_found') await this.markLeft(group);
      else throw e;
    }
  }

  private describe(ev: any): string {
    const who = this.host.nameOf(ev.by);
    const me = this.host.me();
    const list = () => (ev.accounts as number[]).map((a) => (a === me ? 'you' : this.host.nameOf(a))).join(', ');
    switch (ev.change) {
      case 'created': return `${who} created the group "${ev.name}"`;
      case 'renamed': return `${who} renamed the group to "${ev.name}"`;
      case 'described': return `${who} changed the description`;
      case 'picture': return `${who} changed the group picture`;
      case 'announce_only': return ev.on ? `${who} allowed only admins to send` : `${who} allowed everyone to send`;
      case 'added': return `${who} added ${list()}`;
      case 'removed': return `${who} removed ${list()}`;
      case 'left': return `${who} left`;
      case 'joined': return `${who} joined with an invite link`;
      case 'promoted': return `${who} made ${list()} admin`;
      case 'demoted': return `${who} dismissed ${list()} as admin`;
      case 'invite_reset': return `${who} reset the invite link`;
      case 'timer': return ev.seconds ? `${who} turned on disappearing messages` : `${who} turned off disappearing messages`;
      default: return `${who} changed the group`;
    }
  }
}

export function newGroupChat(group: number, name: string): db.Chat {
  return { peer: chatOf(group), name, lastText: '', lastTs: 0, unread: 0, group, members: [] };
}

/** Whether `account` may change the group (admin or creator). */
export function isAdmin(c: db.Chat, account: number): boolean {
  return (c.members ?? []).some((m) => m.account === account && m.role !== 'member');
}
