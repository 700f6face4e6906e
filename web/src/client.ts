// The application model: session, connection, envelopes in and out, chats
// and history in IndexedDB, receipts, typing and presence. The UI reads
// `state` and re-renders on `subscribe`.

import { toB64, utf8 } from './b64';
import { Calls } from './call';
import { Crypto } from './crypto';
import { GroupCalls } from './groupcall';
import { Groups, groupOf, newGroupChat } from './groups';
import { Push } from './push';
import * as media from './media';
import { openStatus, sealStatus, type Status } from './status';
import * as db from './db';
import { Conn, Frame, ServerError } from './ws';
import { defaultDeviceName } from './format';

export interface Session {
  account: number;
  device: number;
  credential: string;
  phone: string;
}

export interface Presence {
  online: boolean | null;
  lastSeen: number | null;
}

/** What travels inside the encryption (the app's own format). */
interface Content {
  v: 1;
  kind: 'text' | 'file' | 'reaction' | 'status_key';
  status?: string; // status_key: the status msg id
  key?: string; // status_key: AES key, base64
  text: string;
  file?: media.FileRef;
  reply_to?: { key: string; text: string };
  target?: string; // reactions: the message key
  emoji?: string; // reactions: '' removes
  to: number; // the chat (the recipient account, -group for groups), for my other devices
  from_phone: string;
}

export interface State {
  status: 'starting' | 'logged-out' | 'connecting' | 'online' | 'offline';
  session: Session | null;
  chats: db.Chat[];
  open: number | null;
  messages: db.Message[];
  typing: Map<number, number>; // account -> until (ms)
  presence: Map<number, Presence>;
  error: string | null;
  progress: Map<string, number>; // message key -> upload fraction
  statuses: Status[];
}

const TYPING_SHOWN_MS = 6000;

export class Client {
  state: State = {
    status: 'starting',
    session: null,
    chats: [],
    open: null,
    messages: [],
    typing: new Map(),
    presence: new Map(),
    error: null,
    progress: new Map(),
    statuses: [],
  };
  private listeners = new Set<() => void>();
  readonly calls = new Calls(
    () => this.conn,
    (ended) => this.changed(ended ? { error: `Call ended: ${ended.replace(/_/g, ' ')}` } : {}),
  );
  private conn: Conn | null = null;
  private crypto: Crypto | null = null;
  private queue: Promise<void> = Promise.resolve();
  private retry = 1000;
  private typingSent = 0;
  private names = new Map<number, string>();
  readonly pushes = new Push(() => this.conn, () => this.changed());
  readonly groups = new Groups({
    need: () => this.need(),
    me: () => this.state.session!.account,
    nameOf: (a) => this.nameOf(a),
    learnName: (a, n) => this.learnName(a, n),
    refresh: (chat) => this.refresh(chat),
    openChat: (chat) => this.openChat(chat),
  });

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  changed(patch: Partial<State> = {}) {
    this.state = { ...this.state, ...patch };
    for (const fn of this.listeners) fn();
  }

  async start() {
    let session: Session | undefined;
    try {
      session = await db.kvGet<Session>('session');
    } catch (e) {
      return this.changed({ status: 'logged-out', error: `This browser's storage is unavailable: ${(e as Error).message}` });
    }
    if (!session) return this.changed({ status: 'logged-out' });
    this.names = new Map(Object.entries((await db.kvGet<Record<string, string>>('names')) ?? {}).map(([a, n]) => [Number(a), n]));
    this.changed({ session, chats: await this.sortedChats(), statuses: (await db.kvGet<Status[]>('statuses')) ?? [] });
    await this.connect();
  }

  /** A display name for an account: "You", a 1:1 chat's name, a phone number seen, or `#id`. */
  nameOf(account: number): string {
    if (account === this.state.session?.account) return 'You';
    return this.state.chats.find((c) => c.peer === account)?.name ?? this.names.get(account) ?? `#${account}`;
  }

  private async learnName(account: number, name: string) {
    if (!name || name.startsWith('#') || this.names.get(account) === name) return;
    this.names.set(account, name);
    await db.kvPut('names', Object.fromEntries(this.names));
  }

  // ---- registration ----

  private pending: Conn | null = null;

  async requestCode(phone: string) {
    this.pending ??= await Conn.open(Conn.defaultUrl());
    await this.pending.request({ type: 'request_code', phone });
  }

  async verify(phone: string, code: string, deviceName: string) {
    this.pending ??= await Conn.open(Conn.defaultUrl());
    const r = await this.pending.request({ type: 'verify', phone, code, device_name: deviceName });
    this.pending.close();
    this.pending = null;
    const session: Session = { account: r.account, device: r.device, credential: r.credential, phone };
    await db.kvPut('session', session);
    this.changed({ session, error: null });
    await this.connect();
  }

  /** Joins an existing account with a code from one of its devices (`link`). */
  async link(code: string, phone: string) {
    this.pending ??= await Conn.open(Conn.defaultUrl());
    const device_name = defaultDeviceName();
    const r = await this.pending.request({ type: 'link', code, device_name });
    this.pending.close();
    this.pending = null;
    const session: Session = { account: r.account, device: r.device, credential: r.credential, phone };
    await db.kvPut('session', session);
    this.changed({ session, error: null });
    await this.connect();
  }

  async logout() {
    const s = this.state.session;
    await this.pushes.disable().catch(() => {});
    if (s && this.conn) {
      await this.conn.request({ type: 'revoke_device', device: s.device }).catch(() => {});
    }
    this.conn?.close();
    this.conn = null;
    this.crypto = null;
    await db.wipe();
    this.names = new Map();
    this.changed({ status: 'logged-out', session: null, chats: [], open: null, messages: [], statuses: [] });
  }

  // ---- connection ----

  private async connect() {
    const s = this.state.session!;
    this.changed({ status: 'connecting' });
    try {
      this.crypto ??= await Crypto.load();
      const conn = await Conn.open(Conn.defaultUrl());
      conn.onPush = (f) => this.push(f);
      conn.onClose = (code) => this.lost(conn, code);
      await conn.request({ type: 'auth', device: s.device, credential: s.credential });
      this.conn = conn;
      this.retry = 1000;
      const stock = await conn.request({ type: 'keys_count' });
      if (stock.one_time_keys < 20) await this.crypto.publish(conn, 50);
      this.changed({ status: 'online', error: null });
      void this.pushes.resume();
      void this.resumeUploads();
      this.sweep();
      await this.subscribePresence();
    } catch (e) {
      if (e instanceof ServerError && e.code === 'bad_credential') return this.loggedOutElsewhere();
      this.changed({ status: 'offline', error: String((e as Error).message) });
      this.reconnectLater();
    }
  }

  private lost(conn: Conn, code: number) {
    if (this.conn !== conn) return;
    this.conn = null;
    if (code === 4003) return void this.loggedOutElsewhere();
    if (code === 4001) return this.changed({ status: 'offline', error: 'This device connected in another tab.' });
    this.changed({ status: 'offline' });
    this.reconnectLater();
  }

  private reconnectLater() {
    const wait = this.retry;
    this.retry = Math.min(this.retry * 2, 30000);
    window.setTimeout(() => {
      if (this.state.session && !this.conn) void this.connect();
    }, wait);
  }

  private async loggedOutElsewhere() {
    this.conn = null;
    await db.wipe();
    this.names = new Map();
    this.changed({ status: 'logged-out', session: null, chats: [], open: null, messages: [], error: 'This device was unlinked.' });
  }

  // ---- pushes ----

  readonly groupCalls = new GroupCalls(() => this.conn, () => this.changed());

  private push(f: Frame) {
    if (this.calls.push(f) || this.groupCalls.push(f)) return;
    switch (f.type) {
      case 'envelope':
        this.queue = this.queue.then(() => this.envelope(f)).catch((e) => console.warn('envelope', e));
        break;
      case 'typing':
        this.state.typing.set(f.from, f.typing ? Date.now() + TYPING_SHOWN_MS : 0);
        this.changed({ typing: new Map(this.state.typing) });
        if (f.typing) window.setTimeout(() => this.changed(), TYPING_SHOWN_MS + 50);
        break;
      case 'presence':
        this.state.presence.set(f.account, { online: f.online, lastSeen: f.last_seen });
        this.changed({ presence: new Map(this.state.presence) });
        break;
      case 'keys_low':
        if (this.conn && this.crypto) void this.crypto.publish(this.conn, 50);
        break;
    }
  }

  private async envelope(f: Frame) {
    try {
      if (f.kind === 'message') await this.incoming(f);
      else if (f.kind === 'group_event') await this.groups.event(f);
      else if (f.kind === 'revoke') await this.revoked(`${f.from}:${f.msg}`);
      else if (f.kind === 'timer' && f.group == null) await this.timerSet(f);
      else if (f.kind === 'status') await this.statusIn(f);
      else if (f.kind === 'status_view') await this.statusViewed(f);
      else if (f.kind === 'delivered' || f.kind === 'read') await this.receipt(f);
    } catch (e) {
      console.warn(`envelope ${f.seq} from ${f.from} dropped:`, (e as Error).message);
    }
    this.conn?.send({ type: 'ack', seqs: [f.seq] });
  }

  private async incoming(f: Frame) {
    const me = this.state.session!;
    const key = `${f.from}:${f.msg}`;
    if (await db.messageGet(key)) return; // redelivered
    const opened = await this.crypto!.decrypt(f.from_device, f.payload, f.group ?? null);
    if (opened.kind === 'group_key') return;
    const content = parseContent(opened.bytes, f.from);
    await this.learnName(f.from, content.from_phone);
    if (content.kind === 'reaction') return this.reacted(content, String(f.from));
    if (content.kind === 'status_key') return db.kvPut(`status_key:${f.from}:${content.status}`, content.key);
    if (f.edit_of) return this.edited(`${f.from}:${f.edit_of}`, content.text);
    const mine = f.from === me.account;
    const group = typeof f.group === 'number' ? (f.group as number) : null;
    const chat = group !== null ? -group : mine ? content.to : f.from;
    const m: db.Message = { key, chat, msg: f.msg, from: f.from, ts: f.ts, text: content.text, file: content.file, replyTo: content.reply_to, mine, tick: mine ? 'sent' : 'delivered' };
    if (group !== null && !mine) m.fromName = this.nameOf(f.from);
    const c = (await db.chatGet(chat)) ?? (group !== null ? newGroupChat(group, `Group ${group}`) : newChat(chat, mine ? `#${chat}` : content.from_phone));
    if (c.timer) m.expires = m.ts + c.timer * 1000;
    await db.messagePut(m);
    c.lastText = summary(m);
    c.lastTs = m.ts;
    const viewing = this.state.open === chat && document.visibilityState === 'visible';
    if (!mine && !viewing) c.unread += 1;
    await db.chatPut(c);
    if (!mine) this.state.typing.delete(f.from);
    await this.refresh(chat);
    if (!mine && viewing) await this.markRead([m]);
  }

  // ---- status ----

  /** Posts a text status to every contact in the chat list. */
  async postStatus(text: string) {
    const me = this.state.session!;
    const audience = this.state.chats.filter((c) => c.peer > 0).map((c) => c.peer);
    if (audience.length === 0) throw new Error('no contacts to show it to');
    const msg = newMsgId();
    const sealed = await sealStatus(text);
    const share: Content = { v: 1, kind: 'status_key', text: '', status: msg, key: sealed.key, to: me.account, from_phone: me.phone };
    for (const peer of audience) await this.deliver(peer, newMsgId(), utf8.encode(JSON.stringify({ ...share, to: peer })));
    const r = await this.need().request({ type: 'status_post', msg, audience, payload: sealed.payload });
    await this.keepStatus({ key: `${me.account}:${msg}`, author: me.account, msg, ts: r.ts, text, viewers: [], seen: true });
  }

  private async statusIn(f: Frame) {
    const key = await db.kvGet<string>(`status_key:${f.from}:${f.msg}`);
    if (!key) throw new Error('no key for this status');
    const text = await openStatus(f.payload, key);
    const mine = f.from === this.state.session!.account;
    await this.keepStatus({ key: `${f.from}:${f.msg}`, author: f.from, msg: f.msg, ts: f.ts, text, viewers: [], seen: mine });
  }

  private async statusViewed(f: Frame) {
    const key = `${this.state.session!.account}:${f.msg}`;
    const list = this.state.statuses.map((s) => (s.key === key && !s.viewers.includes(f.from) ? { ...s, viewers: [...s.viewers, f.from] } : s));
    await this.saveStatuses(list);
  }

  /** Marks a status seen and tells its author. */
  async viewStatus(s: Status) {
    if (s.seen) return;
    await this.need().request({ type: 'status_view', author: s.author, msg: s.msg });
    await this.saveStatuses(this.state.statuses.map((x) => (x.key === s.key ? { ...x, seen: true } : x)));
  }

  private async keepStatus(s: Status) {
    await this.saveStatuses([s, ...this.state.statuses.filter((x) => x.key !== s.key)]);
  }

  /** Statuses live 24 h. */
  private async saveStatuses(list: Status[]) {
    const fresh = list.filter((s) => s.ts > Date.now() - 24 * 3600 * 1000);
    await db.kvPut('statuses', fresh);
    this.changed({ statuses: fresh });
  }

  private async timerSet(f: Frame) {
    const me = this.state.session!;
    const peer = f.from === me.account ? f.to : f.from;
    const c = (await db.chatGet(peer)) ?? newChat(peer, `#${peer}`);
    c.timer = f.timer ?? 0;
    await db.chatPut(c);
    await this.refresh(peer);
  }

  /** Sets the chat's disappearing-message timer for both parties. */
  async setTimer(peer: number, seconds: number) {
    const group = groupOf(peer);
    await this.need().request(group !== null ? { type: 'set_timer', group, seconds } : { type: 'set_timer', to: peer, seconds });
    const c = await db.chatGet(peer);
    if (c) {
      c.timer = seconds;
      await db.chatPut(c);
      await this.refresh(peer);
    }
  }

  need() {
    if (!this.conn) throw new Error('offline');
    return this.conn;
  }

  /** Deletes expired disappearing messages now and every minute. */
  private sweeping = 0;
  private sweep() {
    const run = async () => {
      for (const chat of await db.expire(Date.now())) await this.refresh(chat);
    };
    void run();
    this.sweeping ||= window.setInterval(() => void run(), 60000);
  }

  private async reacted(c: Content, from: string) {
    const m = c.target ? await db.messageGet(c.target) : undefined;
    if (!m) return;
    m.reactions = { ...(m.reactions ?? {}) };
    if (c.emoji) m.reactions[from] = c.emoji;
    else delete m.reactions[from];
    await db.messagePut(m);
    await this.refresh(m.chat);
  }

  private async edited(key: string, text: string) {
    const m = await db.messageGet(key);
    if (!m || m.deleted) return;
    m.text = text;
    m.edited = true;
    await db.messagePut(m);
    await this.touchLast(m);
    await this.refresh(m.chat);
  }

  private async revoked(key: string) {
    const m = await db.messageGet(key);
    if (!m) return;
    m.deleted = true;
    m.text = '';
    m.file = undefined;
    m.reactions = undefined;
    await db.messagePut(m);
    await this.touchLast(m);
    await this.refresh(m.chat);
  }

  /** Keeps the chat list's last message in step when it was edited or deleted. */
  private async touchLast(m: db.Message) {
    const c = await db.chatGet(m.chat);
    if (c && c.lastTs === m.ts) {
      c.lastText = summary(m);
      await db.chatPut(c);
    }
  }

  // ---- message actions ----

  async react(m: db.Message, emoji: string) {
    const me = this.state.session!;
    const content: Content = { v: 1, kind: 'reaction', text: '', target: m.key, emoji, to: m.chat, from_phone: me.phone };
    await this.deliver(m.chat, newMsgId(), utf8.encode(JSON.stringify(content)));
    await this.reacted(content, String(me.account));
  }

  async edit(m: db.Message, text: string) {
    const me = this.state.session!;
    const content: Content = { v: 1, kind: 'text', text, to: m.chat, from_phone: me.phone };
    await this.deliver(m.chat, newMsgId(), utf8.encode(JSON.stringify(content)), m.msg);
    await this.edited(m.key, text);
  }

  async deleteForEveryone(m: db.Message) {
    await this.conn?.request({ type: 'revoke', msg: m.msg });
    await this.revoked(m.key);
  }

  async deleteForMe(m: db.Message) {
    await db.messageDelete(m.key);
    await this.refresh(m.chat);
  }

  private async receipt(f: Frame) {
    const me = this.state.session!;
    const m = await db.messageGet(`${me.account}:${f.msg}`);
    if (!m) return;
    const rank = { pending: 0, failed: 0, sent: 1, delivered: 2, read: 3 };
    const tick = m.chat < 0 ? await this.groupTick(m, f) : (f.kind as db.Tick);
    if (rank[tick] <= rank[m.tick]) return;
    m.tick = tick;
    await db.messagePut(m);
    await this.refresh(m.chat);
  }

  /** A group message is delivered (read) once every other member's device delivered (read) it. */
  private async groupTick(m: db.Message, f: Frame): Promise<db.Tick> {
    const r = (m.receipts ??= { delivered: [], read: [] });
    const list = f.kind === 'read' ? r.read : r.delivered;
    if (!list.includes(f.from)) list.push(f.from);
    await db.messagePut(m);
    const c = await db.chatGet(m.chat);
    const others = (c?.members ?? []).map((x) => x.account).filter((a) => a !== m.from);
    if (others.length === 0) return m.tick;
    if (others.every((a) => r.read.includes(a))) return 'read';
    if (others.every((a) => r.read.includes(a) || r.delivered.includes(a))) return 'delivered';
    return m.tick;
  }

  // ---- actions ----

  async startChat(phone: string, name: string): Promise<number> {
    const r = await this.conn!.request({ type: 'lookup', phone });
    const peer = r.account as number;
    if (!(await db.chatGet(peer))) await db.chatPut(newChat(peer, name || phone));
    await this.openChat(peer);
    await this.subscribePresence();
    return peer;
  }

  async openChat(peer: number | null) {
    this.state.open = peer;
    if (peer === null) return this.changed({ open: null, messages: [] });
    const c = await db.chatGet(peer);
    const msgs = await db.history(peer);
    const unread = msgs.filter((m) => !m.mine && !m.system && m.tick !== 'read');
    if (c && c.unread) {
      c.unread = 0;
      await db.chatPut(c);
    }
    await this.refresh(peer);
    if (unread.length) await this.markRead(unread);
  }

  /** Sends `read` receipts to the senders (several in a group) and marks the messages read. */
  private async markRead(msgs: db.Message[]) {
    if (!this.conn) return;
    const bySender = new Map<number, string[]>();
    for (const m of msgs) bySender.set(m.from, [...(bySender.get(m.from) ?? []), m.msg]);
    for (const [to, ids] of bySender) {
      for (let i = 0; i < ids.length; i += 100) {
        await this.conn.request({ type: 'read', to, msgs: ids.slice(i, i + 100) }).catch(() => {});
      }
    }
    for (const { key } of msgs) {
      const m = await db.messageGet(key);
      if (m) {
        m.tick = 'read';
        await db.messagePut(m);
      }
    }
  }

  async sendText(peer: number, text: string, replyTo?: db.Message) {
    const reply = replyTo && { key: replyTo.key, text: summary(replyTo).slice(0, 200) };
    await this.sendContent(peer, text, undefined, undefined, reply);
  }

  /** Seals, uploads (progress in `state.progress`) and sends a file. */
  async sendFile(peer: number, file: File, extra: Partial<media.FileRef> = {}) {
    const me = this.state.session!;
    const key = `${me.account}:${newMsgId()}`;
    try {
      const plain = new Uint8Array(await file.arrayBuffer());
      const [sealed, look] = await Promise.all([media.seal(plain), media.preview(file)]);
      const ref: media.FileRef = { id: sealed.id, key: sealed.key, sha256: sealed.sha256, size: file.size, name: file.name || 'file', mime: file.type || 'application/octet-stream', ...look, ...extra };
      this.setProgress(key, 0);
      await this.put(peer, key, '', ref);
      // Kept until sent, so that a reload resumes the upload (resumeUploads).
      await db.kvPut(`upload:${key}`, { peer, key, ref, bytes: sealed.bytes } satisfies PendingUpload);
      await this.finishUpload({ peer, key, ref, bytes: sealed.bytes });
    } catch (e) {
      this.setProgress(key, null);
      this.changed({ error: `Not sent: ${(e as Error).message}` });
    }
  }

  private uploading = new Set<string>();

  /** Uploads (or resumes) a pending upload, then sends its message and forgets it. */
  private async finishUpload(u: PendingUpload) {
    if (this.uploading.has(u.key)) return;
    this.uploading.add(u.key);
    try {
      const started = (url: string) => db.kvPut(`upload:${u.key}`, { ...u, url });
      const ref = { ...u.ref };
      ref.id = await media.upload(u.bytes, u.ref.id, this.auth(), (f) => this.setProgress(u.key, f), u.url, started);
      this.setProgress(u.key, null);
      await this.sendContent(u.peer, '', ref, u.key);
      await db.kvDelete(`upload:${u.key}`);
    } finally {
      this.uploading.delete(u.key);
    }
  }

  /** At connect: continues the uploads a reload interrupted, from the server's offset. */
  private async resumeUploads() {
    for (const k of await db.kvKeys('upload:')) {
      const u = await db.kvGet<PendingUpload>(k);
      if (!u) continue;
      this.setProgress(u.key, 0);
      await this.finishUpload(u).catch(async (e) => {
        this.setProgress(u.key, null);
        await db.kvDelete(k);
        this.changed({ error: `Not sent: ${(e as Error).message}` });
      });
    }
  }

  private setProgress(key: string, f: number | null) {
    const p = new Map(this.state.progress);
    if (f === null) p.delete(key);
    else p.set(key, f);
    this.changed({ progress: p });
  }

  /** The Authorization header value for the media store. */
  auth(): string {
    const s = this.state.session!;
    return `Bearer ${s.device}:${s.credential}`;
  }

  /** Downloads and decrypts an attachment (kept as a blob URL for the session). */
  async fileUrl(f: media.FileRef): Promise<string> {
    const known = this.blobs.get(f.id);
    if (known) return known;
    const url = URL.createObjectURL(await media.download(f, this.auth()));
    this.blobs.set(f.id, url);
    return url;
  }
  private blobs = new Map<string, string>();

  /** Stores a message of mine (pending) and updates its chat. */
  private async put(peer: number, key: string, text: string, file?: media.FileRef, replyTo?: db.Message['replyTo']): Promise<db.Message> {
    const me = this.state.session!;
    const msg = key.slice(key.indexOf(':') + 1);
    const m: db.Message = { key, chat: peer, msg, from: me.account, ts: Date.now(), text, file, replyTo, mine: true, tick: 'pending' };
    const c = (await db.chatGet(peer)) ?? newChat(peer, `#${peer}`);
    if (c.timer) m.expires = m.ts + c.timer * 1000;
    await db.messagePut(m);
    c.lastText = summary(m);
    c.lastTs = m.ts;
    await db.chatPut(c);
    await this.refresh(peer);
    return m;
  }

  private async sendContent(peer: number, text: string, file?: media.FileRef, key?: string, replyTo?: db.Message['replyTo']) {
    const me = this.state.session!;
    key ??= `${me.account}:${newMsgId()}`;
    const m = await this.put(peer, key, text, file, replyTo);
    const msg = m.msg;
    this.typing(peer, false);
    const content: Content = { v: 1, kind: file ? 'file' : 'text', text, file, reply_to: replyTo, to: peer, from_phone: me.phone };
    let sent: Frame | null = null;
    try {
      sent = await this.deliver(peer, msg, utf8.encode(JSON.stringify(content)));
    } catch (e) {
      this.changed({ error: `Not sent: ${(e as Error).message}` });
    }
    // Receipts may have arrived before the reply: keep the furthest tick.
    const latest = (await db.messageGet(m.key)) ?? m;
    if (!sent) latest.tick = 'failed';
    else if (latest.tick === 'pending') latest.tick = 'sent';
    if (sent) latest.ts = sent.ts;
    m.tick = latest.tick;
    m.ts = latest.ts;
    await db.messagePut(m);
    await this.refresh(peer);
  }

  /** Encrypts for every device and sends; refreshes device lists once on mismatch. */
  private async deliver(peer: number, msg: string, bytes: Uint8Array, editOf?: string): Promise<Frame> {
    const group = groupOf(peer);
    if (group !== null) return this.deliverGroup(group, msg, bytes, editOf);
    return this.sendOlm(peer, msg, { t: 'message', body: toB64(bytes) }, editOf);
  }

  /** A 1:1 `send` of an Olm inner content to every device of `peer` (and my others). */
  private async sendOlm(peer: number, msg: string, inner: object, editOf?: string): Promise<Frame> {
    const me = this.state.session!;
    for (let attempt = 0; ; attempt++) {
      const conn = this.need();
      const envelopes = await this.crypto!.encryptInner(conn, me, peer, inner);
      try {
        const frame: Frame = { type: 'send', msg, to: peer, envelopes };
        if (editOf) frame.edit_of = editOf;
        return await conn.request(frame);
      } catch (e) {
        if (!(e instanceof ServerError && e.code === 'mismatched_devices') || attempt >= 2) throw e;
      }
    }
  }

  /** Megolm-encrypts for the group (sharing a new session key first when needed) and sends. */
  private async deliverGroup(group: number, msg: string, bytes: Uint8Array, editOf?: string): Promise<Frame> {
    const me = this.state.session!;
    const share = async (to: number, id: string, inner: object) => void (await this.sendOlm(to, id, inner));
    const payload = await this.crypto!.groupEncrypt(this.need(), me, group, bytes, share);
    const frame: Frame = { type: 'group_send', group, msg, payload };
    if (editOf) frame.edit_of = editOf;
    return this.need().request(frame);
  }


  typing(peer: number, on: boolean) {
    const now = Date.now();
    if (peer < 0 || (on && now - this.typingSent < 3000)) return;
    this.typingSent = on ? now : 0;
    this.conn?.send({ type: 'typing', to: peer, typing: on });
  }

  private async subscribePresence() {
    const accounts = this.state.chats.filter((c) => c.peer > 0).map((c) => c.peer);
    if (!this.conn || accounts.length === 0) return;
    const r = await this.conn.request({ type: 'presence_subscribe', accounts });
    for (const p of r.presence) this.state.presence.set(p.account, { online: p.online, lastSeen: p.last_seen });
    this.changed({ presence: new Map(this.state.presence) });
  }

  private async refresh(chat: number) {
    const chats = await this.sortedChats();
    const known = new Set(this.state.chats.map((c) => c.peer));
    const messages = this.state.open === null ? [] : await db.history(this.state.open);
    this.changed({ chats, messages });
    if (chats.some((c) => !known.has(c.peer)) && chat !== undefined) await this.subscribePresence().catch(() => {});
  }

  /** Pinned chats first, then the newest. */
  private async sortedChats(): Promise<db.Chat[]> {
    return (await db.chats()).sort((a, b) => Number(!!b.pinned) - Number(!!a.pinned) || b.lastTs - a.lastTs);
  }

  /** Pins or archives a chat (kept in this browser only). */
  async setChatFlag(peer: number, flag: 'pinned' | 'archived', on: boolean) {
    const c = await db.chatGet(peer);
    if (!c) return;
    c[flag] = on;
    await db.chatPut(c);
    await this.refresh(peer);
  }

  search(query: string): Promise<db.Message[]> {
    return db.search(query);
  }

  /** The server's call log (newest first). */
  async callHistory(): Promise<Frame[]> {
    if (!this.conn) throw new Error('offline');
    return (await this.conn.request({ type: 'call_history', limit: 50 })).calls;
  }

  dismissError() {
    this.changed({ error: null });
  }
}

/** An upload that survives a reload (kv `upload:<message key>`). */
interface PendingUpload {
  peer: number;
  key: string;
  ref: media.FileRef;
  bytes: Uint8Array<ArrayBuffer>;
  url?: string; // the tus upload, once created
}

function summary(m: db.Message): string {
  if (m.deleted) return 'This message was deleted';
  if (!m.file) return m.text;
  const kind = m.file.waveform ? 'Voice note' : m.file.mime.startsWith('image/') ? 'Photo' : m.file.mime.startsWith('video/') ? 'Video' : m.file.name;
  return m.text ? `${kind}: ${m.text}` : kind;
}

function newChat(peer: number, name: string): db.Chat {
  return { peer, name, lastText: '', lastTs: 0, unread: 0 };
}

function newMsgId(): string {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return 'w' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** The app content, or plain UTF-8 text from clients that send only text (the CLI). */
function parseContent(bytes: Uint8Array, from: number): Content {
  const text = utf8.decode(bytes);
  try {
    const c = JSON.parse(text);
    if (c && c.v === 1 && ['text', 'file', 'reaction', 'status_key'].includes(c.kind) && typeof c.text === 'string') return c as Content;
  } catch {
    // not JSON: plain text
  }
  return { v: 1, kind: 'text', text, to: from, from_phone: `#${from}` };
}
