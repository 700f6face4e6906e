import type { Presence } from './client';

export function time(ts: number): string {
  if (!ts) return '';
  const d = new Date(ts);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) {
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  return d.toLocaleDateString();
}

export function presence(p: Presence | undefined): string {
  if (!p || p.online === null) return '';
  if (p.online) return 'online';
  return p.lastSeen ? `last seen ${time(p.lastSeen)}` : '';
}

/** The device name a new browser device gets by default. */
export function defaultDeviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Firefox/.test(ua) ? 'Firefox' : /Chrome|Chromium/.test(ua) ? 'Chromium' : /Safari/.test(ua) ? 'Safari' : 'Browser';
  return `${browser} (web)`;
}
