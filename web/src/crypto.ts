// End-to-end encryption with libolm (@matrix-org/olm), wire-compatible with
// the Rust SDK's vodozemac code (client/src/e2e.rs):
//   payload = JSON {"e2e":"olm","sender_key","kind","body"} (base64, padded)
//   Olm plaintext = JSON {"t":"message","body": base64(app bytes)}
//     or {"t":"group_key","group","session_key"} (a Megolm session key)
//   group payload = JSON {"e2e":"megolm","session_id","body"}, the Megolm
//     plaintext being {"t":"message","body"} again
// As in the SDK, a device keeps one outbound Megolm session per group and
// starts a new one (handing its key to every member device over Olm)
// whenever the set of member devices changed, so that removed members
// cannot read what follows.
// The device's Olm account and sessions are pickled into IndexedDB after
// every change, encrypted with a random pickle key. That key is itself
// stored encrypted (AES-GCM) under a non-extractable WebCrypto key kept in
// IndexedDB too (see docs/web.md for what that protects and what it does
// not).

import Olm from '@matrix-org/olm';
import wasmUrl from '@matrix-org/olm/olm.wasm?url';
import { fromB64, pad, toB64, unpad, utf8 } from './b64';
import { kvDelete, kvGet, kvPut } from './db';
import type { Conn } from './ws';

let ready: Promise<void> | null = null;
export function initOlm(): Promise<void> {
  // olm.js assigns this undeclared global, which a strict-mode bundle
  // refuses unless it exists.
  (globalThis as any).OLM_OPTIONS ??= {};
  ready ??= Olm.init({ locateFile: () => wasmUrl });
  return ready;
}

interface Saved {
  account: string;
  nextKeyId: number;
  published: boolean;
  identities: Record<number, string>;
  sessions: Record<number, string[]>;
  outbound?: { group: number; pickle: string; shared: number[] }[];
  inbound?: { group: number; pickle: string }[];
}

/** What a decrypted envelope held. */
export type Opened = { kind: 'message'; bytes: Uint8Array } | { kind: 'group_key'; group: number };

interface Outbound {
  session: Olm.OutboundGroupSession;
  shared: number[]; // the devices that got its key, sorted
}

/** Sends an Olm-encrypted inner message to an account (1:1 `send` with retries). */
export type SendInner = (to: number, msg: string, inner: object) => Promise<void>;

/** Who a ciphertext is for. */
export interface Target {
  device: number;
  payload: string; // base64 of the wire JSON
}

export class Crypto {
  private sessions = new Map<number, Olm.Session[]>();
  private identities = new Map<number, string>();
  private outbound = new Map<number, Outbound>();
  private inbound = new Map<string, { group: number; session: Olm.InboundGroupSession }>();

  private constructor(
    private account: Olm.Account,
    private pickleKey: string,
    private nextKeyId: number,
    private published: boolean,
  ) {}

  static async load(): Promise<Crypto> {
    await initOlm();
    const key = await pickleKey();
    const saved = await kvGet<Saved>('olm');
    const account = new Olm.Account();
    if (!saved) {
      account.create();
      const c = new Crypto(account, key, 1, false);
      await c.save();
      return c;
    }
    account.unpickle(key, saved.account);
    const c = new Crypto(account, key, saved.nextKeyId, saved.published);
    for (const [d, k] of Object.entries(saved.identities)) c.identities.set(Number(d), k);
    for (const [d, list] of Object.entries(saved.sessions)) {
      c.sessions.set(
        Number(d),
        list.map((p) => {
          const s = new Olm.Session();
          s.unpickle(key!, p);
          return s;
        }),
      );
    }
    c.restoreGroups(saved);
    return c;
  }

  private restoreGroups(saved: Saved) {
    for (const o of saved.outbound ?? []) {
      const session = new Olm.OutboundGroupSession();
      session.unpickle(this.pickleKey, o.pickle);
      this.outbound.set(o.group, { session, shared: o.shared });
    }
    for (const i of saved.inbound ?? []) {
      const session = new Olm.InboundGroupSession();
      session.unpickle(this.pickleKey, i.pickle);
      this.inbound.set(session.session_id(), { group: i.group, session });
    }
  }

  async save() {
    const sessions: Record<number, string[]> = {};
    for (const [d, list] of this.sessions) sessions[d] = list.map((s) => s.pickle(this.pickleKey));
    const saved: Saved = {
      account: this.account.pickle(this.pickleKey),
      nextKeyId: this.nextKeyId,
      published: this.published,
      identities: Object.fromEntries(this.identities),
      sessions,
      outbound: [...this.outbound].map(([group, o]) => ({ group, pickle: o.session.pickle(this.pickleKey), shared: o.shared })),
      inbound: [...this.inbound.values()].map((i) => ({ group: i.group, pickle: i.session.pickle(this.pickleKey) })),
    };
    await kvPut('olm', saved);
  }

  private curve(): string {
    return JSON.parse(this.account.identity_keys()).curve25519;
  }

  private signed(kind: string, keyId: number, publicB64: string) {
    const msg = `palaver-prekey-v1:${kind}:${keyId}:${publicB64}`;
    return { key_id: keyId, public: publicB64, signature: pad(this.account.sign(msg)) };
  }

  /** Publishes the identity, the signed prekey (first time) and `count` one-time keys. */
  async publish(conn: Conn, count: number): Promise<number> {
    const ids = JSON.parse(this.account.identity_keys());
    const upload: Record<string, unknown> = {
      type: 'keys_upload',
      identity_key: pad(ids.curve25519),
      signing_key: pad(ids.ed25519),
    };
    if (!this.published) {
      this.account.generate_fallback_key();
      const fb = Object.values(JSON.parse(this.account.unpublished_fallback_key()).curve25519)[0] as string;
      upload.signed_prekey = this.signed('signed-prekey', this.nextKeyId++, pad(fb));
    }
    const max = this.account.max_number_of_one_time_keys();
    this.account.generate_one_time_keys(Math.min(count, Math.floor(max / 2), 100));
    const otks = Object.values(JSON.parse(this.account.one_time_keys()).curve25519) as string[];
    upload.one_time_keys = otks.map((k) => ({ key_id: this.nextKeyId++, public: pad(k) }));
    await this.save();
    const reply = await conn.request(upload as any);
    this.account.mark_keys_as_published();
    this.published = true;
    await this.save();
    return reply.one_time_keys;
  }

  private pin(device: number, key: string) {
    const known = this.identities.get(device);
    if (known && known !== key) throw new Error(`the identity key of device ${device} changed`);
    this.identities.set(device, key);
  }

  /** Checks a claimed bundle's signature and opens an outbound session. */
  private open(bundle: any) {
    const spk = bundle.signed_prekey;
    const util = new Olm.Utility();
    try {
      const msg = `palaver-prekey-v1:signed-prekey:${spk.key_id}:${spk.public}`;
      util.ed25519_verify(unpad(bundle.signing_key), msg, unpad(spk.signature));
    } catch {
      throw new Error(`device ${bundle.device} published a bundle whose signature does not verify`);
    } finally {
      util.free();
    }
    const identity = unpad(bundle.identity_key);
    this.pin(bundle.device, identity);
    const otk = unpad((bundle.one_time_key ?? spk).public);
    const s = new Olm.Session();
    s.create_outbound(this.account, identity, otk);
    this.sessions.set(bundle.device, [s, ...(this.sessions.get(bundle.device) ?? [])]);
  }

  private async ensure(conn: Conn, account: number, devices: number[]) {
    if (devices.every((d) => this.sessions.has(d))) return;
    const claimed = await conn.request({ type: 'keys_claim', account });
    for (const b of claimed.bundles) {
      if (devices.includes(b.device) && !this.sessions.has(b.device)) this.open(b);
    }
    const missing = devices.find((d) => !this.sessions.has(d));
    if (missing !== undefined) throw new Error(`device ${missing} has no published keys`);
  }

  private encryptFor(device: number, inner: object): string {
    const s = this.sessions.get(device)![0];
    const out = s.encrypt(JSON.stringify(inner));
    const wire = { e2e: 'olm', sender_key: pad(this.curve()), kind: out.type, body: pad(out.body) };
    return toB64(utf8.encode(JSON.stringify(wire)));
  }

  /** One envelope per device a send to `to` must cover (theirs and my other ones). */
  async encrypt(conn: Conn, me: { account: number; device: number }, to: number, plaintext: Uint8Array): Promise<Target[]> {
    return this.encryptInner(conn, me, to, { t: 'message', body: toB64(plaintext) });
  }

  /** Like `encrypt`, for any inner Olm content. */
  async encryptInner(conn: Conn, me: { account: number; device: number }, to: number, inner: object): Promise<Target[]> {
    const targets: Target[] = [];
    const accounts = to === me.account ? [to] : [to, me.account];
    for (const account of accounts) {
      const list = await conn.request({ type: 'devices', account });
      const devices = (list.devices as number[]).filter((d) => d !== me.device);
      await this.ensure(conn, account, devices);
      for (const d of devices) targets.push({ device: d, payload: this.encryptFor(d, inner) });
    }
    await this.save();
    return targets;
  }

  /** Decrypts an envelope's payload (Olm, or Megolm when `group` is set). */
  async decrypt(fromDevice: number, payloadB64: string, group: number | null = null): Promise<Opened> {
    const wire = JSON.parse(utf8.decode(fromB64(payloadB64)));
    if (wire.e2e === 'megolm') return { kind: 'message', bytes: this.megolmDecrypt(wire, group) };
    if (wire.e2e !== 'olm') throw new Error(`unsupported payload ${String(wire.e2e)}`);
    const sender = unpad(wire.sender_key);
    const body = unpad(wire.body);
    const known = this.identities.get(fromDevice);
    if (known && known !== sender) throw new Error(`the identity key of device ${fromDevice} changed`);
    const plain = this.olmDecrypt(fromDevice, sender, wire.kind, body);
    this.pin(fromDevice, sender);
    const inner = JSON.parse(plain);
    let opened: Opened;
    if (inner.t === 'message') opened = { kind: 'message', bytes: fromB64(inner.body) };
    else if (inner.t === 'group_key') opened = this.groupKey(inner.group, inner.session_key);
    else throw new Error(`unsupported Olm content ${String(inner.t)}`);
    await this.save();
    return opened;
  }

  private groupKey(group: unknown, key: unknown): Opened {
    if (typeof group !== 'number' || typeof key !== 'string') throw new Error('malformed group key');
    const session = new Olm.InboundGroupSession();
    session.create(unpad(key));
    this.inbound.get(session.session_id())?.session.free();
    this.inbound.set(session.session_id(), { group, session });
    return { kind: 'group_key', group };
  }

  private megolmDecrypt(wire: any, group: number | null): Uint8Array {
    const known = this.inbound.get(String(wire.session_id));
    if (!known) throw new Error(`no key for group session ${String(wire.session_id)}`);
    if (known.group !== group) throw new Error('group session used outside its group');
    const inner = JSON.parse(known.session.decrypt(unpad(String(wire.body))).plaintext);
    if (inner.t !== 'message') throw new Error('unexpected group plaintext');
    return fromB64(inner.body);
  }

  /**
   * Encrypts a group message with this device's Megolm session for the
   * group, first starting a new one and handing its key to every member
   * device when the set of member devices changed (as the SDK does).
   * Returns the base64 payload for `group_send`.
   */
  async groupEncrypt(conn: Conn, me: { account: number; device: number }, group: number, plaintext: Uint8Array, share: SendInner): Promise<string> {
    const info = (await conn.request({ type: 'group_get', group })).group;
    const members = (info.members as { account: number }[]).map((m) => m.account);
    const counts = new Map<number, number>();
    const devices: number[] = [];
    for (const account of members) {
      const list = (await conn.request({ type: 'devices', account })).devices as number[];
      counts.set(account, list.length);
      devices.push(...list.filter((d) => d !== me.device));
    }
    devices.sort((a, b) => a - b);
    let out = this.outbound.get(group);
    if (!out || out.shared.join() !== devices.join()) {
      const session = new Olm.OutboundGroupSession();
      session.create();
      const inner = { t: 'group_key', group, session_key: pad(session.session_key()) };
      for (const [i, account] of members.entries()) {
        // A send to oneself reaches one's other devices only.
        if (account === me.account && (counts.get(account) ?? 0) <= 1) continue;
        await share(account, keyMsgId(session.session_id(), i), inner);
      }
      out?.session.free();
      out = { session, shared: devices };
      this.outbound.set(group, out);
    }
    const body = out.session.encrypt(JSON.stringify({ t: 'message', body: toB64(plaintext) }));
    await this.save();
    const wire = { e2e: 'megolm', session_id: out.session.session_id(), body };
    return toB64(utf8.encode(JSON.stringify(wire)));
  }


  private olmDecrypt(from: number, sender: string, kind: number, body: string): string {
    const list = this.sessions.get(from) ?? [];
    for (const s of list) {
      if (kind === 0 && !s.matches_inbound_from(sender, body)) continue;
      try {
        return s.decrypt(kind, body);
      } catch {
        // try the next session
      }
    }
    if (kind !== 0) throw new Error('no session with this device');
    const s = new Olm.Session();
    s.create_inbound_from(this.account, sender, body);
    this.account.remove_one_time_keys(s);
    const plain = s.decrypt(kind, body);
    this.sessions.set(from, [s, ...list]);
    return plain;
  }
}

/** The message id of a group-key share: unique per session and member (as the SDK's). */
function keyMsgId(sessionId: string, member: number): string {
  const safe = sessionId.replace(/[^A-Za-z0-9]/g, '').slice(0, 40);
  return `k.${safe}.${member}`;
}

interface Wrapped {
  iv: Uint8Array<ArrayBuffer>;
  ct: ArrayBuffer;
}

/**
 * The pickle key, unwrapped with the non-extractable `wrap_key`. Made (or
 * moved from the clear `pickle_key` of older versions) on first use.
 */
async function pickleKey(): Promise<string> {
  const wrapped = await kvGet<Wrapped>('pickle_key_wrapped');
  const wrapKey = await kvGet<CryptoKey>('wrap_key');
  if (wrapped && wrapKey) {
    const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: wrapped.iv }, wrapKey, wrapped.ct);
    return utf8.decode(new Uint8Array(plain));
  }
  const legacy = await kvGet<string>('pickle_key');
  const key = legacy ?? toB64(crypto.getRandomValues(new Uint8Array(32)));
  const fresh = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, fresh, utf8.encode(key));
  await kvPut('wrap_key', fresh);
  await kvPut('pickle_key_wrapped', { iv, ct } satisfies Wrapped);
  if (legacy) await kvDelete('pickle_key');
  return key;
}
