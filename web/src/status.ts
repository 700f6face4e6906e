// Status posts (docs/protocol.md "Status"): one payload for the whole
// audience, so each status is encrypted with its own AES-256-GCM key, and
// that key goes to every audience account over the 1:1 Olm channel first
// (a `status_key` content); the device queue keeps the order, so the key
// arrives before the status. This scheme is the web client's own: the Rust
// SDK has no status encryption to match yet.

import { fromB64, toB64, utf8 } from './b64';

export interface Status {
  key: string; // `${author}:${msg}`
  author: number;
  msg: string;
  ts: number;
  text: string;
  viewers: number[]; // for my own statuses
  seen: boolean; // for others' statuses
}

export async function sealStatus(text: string): Promise<{ key: string; payload: string }> {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const k = await crypto.subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt']);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const body = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, k, utf8.encode(JSON.stringify({ text }))));
  const wire = { e2e: 'status-aes-gcm', iv: toB64(iv), body: toB64(body) };
  return { key: toB64(raw), payload: toB64(utf8.encode(JSON.stringify(wire))) };
}

export async function openStatus(payload: string, key: string): Promise<string> {
  const wire = JSON.parse(utf8.decode(fromB64(payload)));
  if (wire.e2e !== 'status-aes-gcm') throw new Error('not a status payload');
  const k = await crypto.subtle.importKey('raw', fromB64(key), 'AES-GCM', false, ['decrypt']);
  const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: fromB64(wire.iv) }, k, fromB64(wire.body));
  return JSON.parse(utf8.decode(new Uint8Array(plain))).text;
}
