// Linking a browser to an existing account (docs/protocol.md, "Linking a
// device with a code"): a logged-in device asks for a one-time code and
// shows it as a QR code and as text; the new browser types (or pastes) it.
// The QR holds `palaver:link?code=CODE&phone=PHONE` so that a scanning app
// also learns which number it joins; the server never needs the phone.

import qrcode from 'qrcode-generator';
import { useState } from 'preact/hooks';
import type { Client } from './client';

export function linkUri(code: string, phone: string): string {
  return `palaver:link?code=${encodeURIComponent(code)}&phone=${encodeURIComponent(phone)}`;
}

/** A code typed as is, or a pasted link text: the code and the phone if there is one. */
export function parseLink(text: string): { code: string; phone: string | null } {
  const t = text.trim();
  if (!t.startsWith('palaver:link?')) return { code: t, phone: null };
  const q = new URLSearchParams(t.slice('palaver:link?'.length));
  return { code: q.get('code') ?? '', phone: q.get('phone') };
}

/** The QR code of `text` as SVG squares (no HTML strings). */
export function Qr({ text, label }: { text: string; label: string }) {
  const qr = qrcode(0, 'M');
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  const cells = [];
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (qr.isDark(r, c)) cells.push(<rect key={`${r}.${c}`} x={c + 4} y={r + 4} width="1" height="1" />);
  }
  return (
    <svg class="qr" role="img" aria-label={label} viewBox={`0 0 ${n + 8} ${n + 8}`} shape-rendering="crispEdges">
      <rect width={n + 8} height={n + 8} fill="#fff" />
      <g fill="#000">{cells}</g>
    </svg>
  );
}

/** On a logged-in device: makes a code and shows it. */
export function LinkDevice({ client }: { client: Client }) {
  const [code, setCode] = useState<{ code: string; until: number } | null>(null);
  const make = async () => {
    try {
      const r = await client.need().request({ type: 'link_code_create' });
      setCode({ code: r.code, until: Date.now() + r.expires_in_ms });
    } catch (e) {
      client.changed({ error: (e as Error).message });
    }
  };
  if (!code) return <button type="button" onClick={() => void make()}>Link a device</button>;
  const phone = client.state.session!.phone;
  return (
    <figure class="link-code">
      <Qr text={linkUri(code.code, phone)} label="Link code as a QR code" />
      <figcaption>
        On the new device choose "Link to an existing account" and enter:
        <code data-testid="link-code">{code.code}</code>
        Valid until {new Date(code.until).toLocaleTimeString()}, once.
      </figcaption>
    </figure>
  );
}

/** On the login page: joins an existing account with a code. */
export function LinkForm({ client, onCancel }: { client: Client; onCancel: () => void }) {
  const [text, setText] = useState('');
  const [phone, setPhone] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const parsed = parseLink(text);
  const submit = async (ev: Event) => {
    ev.preventDefault();
    setBusy(true);
    setError('');
    try {
      await client.link(parsed.code, parsed.phone ?? phone.trim());
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form onSubmit={submit}>
      <label>
        Link code (or the link text)
        <input name="link-code" required autoComplete="off" value={text} onInput={(e) => setText(e.currentTarget.value)} />
      </label>
      {parsed.phone === null && (
        <label>
          Your phone number
          <input name="link-phone" type="tel" required value={phone} onInput={(e) => setPhone(e.currentTarget.value)} />
        </label>
      )}
      <button type="submit" disabled={busy}>Link this browser</button>
      <button type="button" class="link" onClick={onCancel}>Register with a phone number instead</button>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}
