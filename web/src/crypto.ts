// End-to-end encryption with libolm (@matrix-org/olm), wire-compatible with
// the Rust SDK's vodozemac code (client/src/e2e.rs):
//   payload = JSON {"e2e":"olm","sender_key","kind","body"} (base64, padded)
//   Olm plaintext = JSON {"t":"message","body": base64(app bytes)}
// The device's Olm account and sessions are pickled into IndexedDB after
// every change, encrypted with a random key kept next to them (see
// docs/web.md for what that protects and what it does not).

import Olm from '@matrix-org/olm';
import wasmUrl from '@matrix-org/olm/olm.wasm?url';
import { fromB64, pad, toB64, unpad, utf8 } from './b64';
import { kvGet, kvPut } from './db';
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
}

/** Who a ciphertext is for. */
export interface Target {
  device: number;
  payload: string; // base64 of the wire JSON
}

export class Crypto {
  private sessions = new Map<number, Olm.Session[]>();
  private identities = new Map<number, string>();

  private constructor(
    private account: Olm.Account,
    private pickleKey: string,
    private nextKeyId: number,
    private published: boolean,
  ) {}

  static async load(): Promise<Crypto> {
    await initOlm();
    let key = await kvGet<string>('pickle_key');
    if (!key) {
      key = toB64(crypto.getRandomValues(new Uint8Array(32)));
      await kvPut('pickle_key', key);
    }
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
    return c;
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

  private encryptFor(device: number, plaintext: Uint8Array): string {
    const s = this.sessions.get(device)![0];
    const inner = JSON.stringify({ t: 'message', body: toB64(plaintext) });
    const out = s.encrypt(inner);
    const wire = { e2e: 'olm', sender_key: pad(this.curve()), kind: out.type, body: pad(out.body) };
    return toB64(utf8.encode(JSON.stringify(wire)));
  }

  /** One envelope per device a send to `to` must cover (theirs and my other ones). */
  async encrypt(conn: Conn, me: { account: number; device: number }, to: number, plaintext: Uint8Array): Promise<Target[]> {
    const targets: Target[] = [];
    const accounts = to === me.account ? [to] : [to, me.account];
    for (const account of accounts) {
      const list = await conn.request({ type: 'devices', account });
      const devices = (list.devices as number[]).filter((d) => d !== me.device);
      await this.ensure(conn, account, devices);
      for (const d of devices) targets.push({ device: d, payload: this.encryptFor(d, plaintext) });
    }
    await this.save();
    return targets;
  }

  /** Decrypts an Olm payload from `fromDevice`; returns the application bytes. */
  async decrypt(fromDevice: number, payloadB64: string): Promise<Uint8Array> {
    const wire = JSON.parse(utf8.decode(fromB64(payloadB64)));
    if (wire.e2e !== 'olm') throw new Error(`unsupported payload ${String(wire.e2e)}`);
    const sender = unpad(wire.sender_key);
    const body = unpad(wire.body);
    const known = this.identities.get(fromDevice);
    if (known && known !== sender) throw new Error(`the identity key of device ${fromDevice} changed`);
    const plain = this.olmDecrypt(fromDevice, sender, wire.kind, body);
    this.pin(fromDevice, sender);
    await this.save();
    const inner = JSON.parse(plain);
    if (inner.t !== 'message') throw new Error(`unsupported Olm content ${String(inner.t)}`);
    return fromB64(inner.body);
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
