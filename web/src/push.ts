// Web Push: the service worker (sw.ts, served at /sw.js), the browser's
// push subscription and the server frames that register it
// (`push_subscribe`, `push_quiet`, `push_unsubscribe`). Every failure on the
// way (no permission, no push service in this browser, a server without
// push) ends in a sentence for the settings panel, never in a console error.

import * as db from './db';
import type { Conn } from './ws';

export interface PushState {
  enabled: boolean; // the user's choice (kept in IndexedDB)
  active: boolean; // the server accepted the subscription
  quietUntil: number | null; // Unix ms
  note: string; // what the panel says about it
}

interface Saved {
  enabled: boolean;
  quietUntil: number | null;
}

const QUIET_MS = 8 * 3600 * 1000;

export class Push {
  state: PushState = { enabled: false, active: false, quietUntil: null, note: '' };

  constructor(
    private conn: () => Conn | null,
    private changed: () => void,
  ) {}

  static supported(): boolean {
    return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
  }

  /** At connect: re-registers when the user had enabled notifications. */
  async resume() {
    const saved = await db.kvGet<Saved>('push');
    if (!saved) return;
    this.set({ enabled: saved.enabled, quietUntil: saved.quietUntil });
    if (saved.enabled && Push.supported() && Notification.permission === 'granted') await this.subscribe();
  }

  /** The settings toggle. */
  async setEnabled(on: boolean) {
    if (!on) return this.disable();
    if (!Push.supported()) return this.set({ note: 'This browser cannot show push notifications.' });
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') return this.set({ enabled: false, note: 'Notifications are blocked for this site.' });
    this.set({ enabled: true });
    await this.save();
    await this.subscribe();
  }

  /** No notifications for 8 hours (or again from now with `null`). */
  async quiet(for8h: boolean) {
    const until = for8h ? Date.now() + QUIET_MS : null;
    this.set({ quietUntil: until });
    await this.save();
    if (this.state.active) await this.request({ type: 'push_quiet', until_ms: until });
  }

  /** Log out or disabling: the server forgets the subscription, so does the browser. */
  async disable() {
    if (this.state.active) await this.request({ type: 'push_unsubscribe' });
    const sub = await this.subscription();
    await sub?.unsubscribe().catch(() => false);
    this.set({ enabled: false, active: false, note: '' });
    await this.save();
  }

  private async subscribe() {
    let reg: ServiceWorkerRegistration;
    try {
      reg = await within(navigator.serviceWorker.register('/sw.js', { scope: '/' }), 'registering the service worker');
    } catch (e) {
      return this.set({ active: false, note: `Push is unavailable: ${(e as Error).message}` });
    }
    const key = await vapidKey();
    if (!key) return this.set({ active: false, note: 'Push is unavailable: this server does not offer it.' });
    let sub: PushSubscription;
    try {
      const pm = reg.pushManager;
      sub = (await within(pm.getSubscription(), 'reading the subscription')) ?? (await within(pm.subscribe({ userVisibleOnly: true, applicationServerKey: key }), 'subscribing'));
    } catch (e) {
      return this.set({ active: false, note: `Push is unavailable in this browser: ${(e as Error).message}` });
    }
    const json = sub.toJSON();
    const target = { kind: 'web_push', endpoint: json.endpoint, p256dh: json.keys?.p256dh, auth: json.keys?.auth };
    if (!(await this.request({ type: 'push_subscribe', target }))) {
      await sub.unsubscribe().catch(() => false);
      return;
    }
    this.set({ active: true, note: 'Notifications are on.' });
    if (this.state.quietUntil && this.state.quietUntil > Date.now()) await this.request({ type: 'push_quiet', until_ms: this.state.quietUntil });
  }

  /** Sends a push frame; false (and a note) when the server refuses it or is unreachable. */
  private async request(frame: { type: string; [k: string]: unknown }): Promise<boolean> {
    const conn = this.conn();
    if (!conn) {
      this.set({ note: 'Offline: push settings are sent when the connection is back.' });
      return false;
    }
    try {
      await conn.request(frame);
      return true;
    } catch (e) {
      this.set({ active: false, note: `Push is unavailable on this server (${(e as Error).message}).` });
      return false;
    }
  }

  private async subscription(): Promise<PushSubscription | null> {
    if (!Push.supported()) return null;
    const reg = await navigator.serviceWorker.getRegistration('/');
    return (await reg?.pushManager.getSubscription().catch(() => null)) ?? null;
  }

  private async save() {
    await db.kvPut('push', { enabled: this.state.enabled, quietUntil: this.state.quietUntil } satisfies Saved);
  }

  private set(patch: Partial<PushState>) {
    this.state = { ...this.state, ...patch };
    this.changed();
  }
}

/** The server's VAPID public key as bytes, or null when it offers no push. */
async function vapidKey(): Promise<Uint8Array<ArrayBuffer> | null> {
  try {
    const r = await fetch('/v1/push/vapid-key', { headers: { accept: 'application/json' } });
    if (!r.ok || !(r.headers.get('content-type') ?? '').includes('json')) return null;
    const body = await r.json();
    if (typeof body.public_key !== 'string') return null;
    const b64 = body.public_key.replace(/-/g, '+').replace(/_/g, '/');
    return Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/** `p`, or an error saying what took longer than 15 s (a browser without a push service may never answer). */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = window.setTimeout(() => reject(new Error(`no answer from the browser ${what}`)), 15000);
    p.then(
      (v) => { window.clearTimeout(t); resolve(v); },
      (e) => { window.clearTimeout(t); reject(e); },
    );
  });
}
