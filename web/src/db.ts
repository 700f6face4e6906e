// IndexedDB: `kv` (session, end-to-end state), `chats` (one per peer
// account) and `messages` (history, indexed by chat). The server only stores
// and forwards, so this is the only copy of the history.

import type { FileRef } from './media';

export type Tick = 'pending' | 'sent' | 'delivered' | 'read' | 'failed';

export interface Message {
  key: string; // `${from}:${msg}`
  chat: number; // the peer account
  msg: string;
  from: number;
  ts: number;
  text: string;
  file?: FileRef;
  replyTo?: { key: string; text: string };
  reactions?: Record<string, string>; // account -> emoji
  edited?: boolean;
  deleted?: boolean;
  expires?: number; // Unix ms: deleted from this browser then
  mine: boolean;
  tick: Tick;
  system?: boolean; // a group event shown as a line in the chat
  fromName?: string; // group messages: who sent it
  receipts?: { delivered: number[]; read: number[] }; // my group messages: accounts
}

export interface Chat {
  peer: number; // the peer account, or -group for a group chat (groups.ts)
  name: string;
  lastText: string;
  lastTs: number;
  unread: number;
  pinned?: boolean;
  archived?: boolean;
  timer?: number; // disappearing messages, seconds (0 or unset: off)
  group?: number; // set for group chats
  members?: { account: number; role: 'creator' | 'admin' | 'member' }[];
  left?: boolean; // removed from the group or left it
}

const NAME = 'palaver';

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(NAME, 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore('kv');
      db.createObjectStore('chats', { keyPath: 'peer' });
      const m = db.createObjectStore('messages', { keyPath: 'key' });
      m.createIndex('chat', ['chat', 'ts']);
    };
    req.onsuccess = () => {
      const db = req.result;
      // Another tab upgrading the schema: let it, and reopen on next use.
      db.onversionchange = () => {
        db.close();
        dbPromise = null;
      };
      resolve(db);
    };
    req.onerror = () => reject(req.error);
    req.onblocked = () => console.warn('IndexedDB upgrade waits for another tab to close');
  });
}

let dbPromise: Promise<IDBDatabase> | null = null;
function db(): Promise<IDBDatabase> {
  dbPromise ??= open();
  return dbPromise;
}

function done<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function store(name: string, mode: IDBTransactionMode = 'readonly') {
  return (await db()).transaction(name, mode).objectStore(name);
}

export async function kvGet<T>(key: string): Promise<T | undefined> {
  return done((await store('kv')).get(key)) as Promise<T | undefined>;
}
export async function kvPut(key: string, value: unknown) {
  await done((await store('kv', 'readwrite')).put(value, key));
}

/** The kv keys that start with `prefix`. */
export async function kvKeys(prefix: string): Promise<string[]> {
  const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
  return done((await store('kv')).getAllKeys(range)) as Promise<string[]>;
}

export async function kvDelete(key: string) {
  await done((await store('kv', 'readwrite')).delete(key));
}

export async function chats(): Promise<Chat[]> {
  return done((await store('chats')).getAll()) as Promise<Chat[]>;
}
export async function chatGet(peer: number): Promise<Chat | undefined> {
  return done((await store('chats')).get(peer)) as Promise<Chat | undefined>;
}
export async function chatPut(c: Chat) {
  await done((await store('chats', 'readwrite')).put(c));
}

export async function messageGet(key: string): Promise<Message | undefined> {
  return done((await store('messages')).get(key)) as Promise<Message | undefined>;
}
export async function messagePut(m: Message) {
  await done((await store('messages', 'readwrite')).put(m));
}
export async function history(chat: number): Promise<Message[]> {
  const idx = (await store('messages')).index('chat');
  const range = IDBKeyRange.bound([chat, 0], [chat, Number.MAX_SAFE_INTEGER]);
  return done(idx.getAll(range)) as Promise<Message[]>;
}

/** Deletes messages whose disappearing timer ran out; returns their chats. */
export async function expire(now: number): Promise<Set<number>> {
  const all = (await done((await store('messages')).getAll())) as Message[];
  const gone = all.filter((m) => m.expires !== undefined && m.expires <= now);
  for (const m of gone) await messageDelete(m.key);
  return new Set(gone.map((m) => m.chat));
}

/** Messages whose text contains `query` (any case), newest first. */
export async function search(query: string, limit = 50): Promise<Message[]> {
  const q = query.toLocaleLowerCase();
  const all = (await done((await store('messages')).getAll())) as Message[];
  const hits = all.filter((m) => m.text.toLocaleLowerCase().includes(q) || (m.file && m.file.name.toLocaleLowerCase().includes(q)));
  return hits.sort((a, b) => b.ts - a.ts).slice(0, limit);
}

export async function messageDelete(key: string) {
  await done((await store('messages', 'readwrite')).delete(key));
}

/** Deletes everything (log out). */
export async function wipe() {
  const d = await db();
  const tx = d.transaction(['kv', 'chats', 'messages'], 'readwrite');
  for (const n of ['kv', 'chats', 'messages']) tx.objectStore(n).clear();
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
}
