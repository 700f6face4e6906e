import { useState } from 'preact/hooks';
import type { Client } from './client';
import { defaultDeviceName } from './format';
import { LinkForm } from './linking';

/** Phone number, then the 6-digit code (the dev verifier shows it on the admin listener). */
export function Login({ client }: { client: Client }) {
  const [phone, setPhone] = useState('');
  const [code, setCode] = useState('');
  const [name, setName] = useState(defaultDeviceName());
  const [step, setStep] = useState<'phone' | 'code' | 'link'>('phone');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(client.state.error ?? '');

  const run = (fn: () => Promise<void>) => async (ev: Event) => {
    ev.preventDefault();
    setBusy(true);
    setError('');
    try {
      await fn();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="login">
      <h1>Palaver</h1>
      {step === 'link' ? (
        <LinkForm client={client} onCancel={() => setStep('phone')} />
      ) : step === 'phone' ? (
        <form onSubmit={run(async () => { await client.requestCode(phone.trim()); setStep('code'); })}>
          <label>
            Phone number
            <input name="phone" type="tel" autoComplete="tel" placeholder="+4915112345678" required
              value={phone} onInput={(e) => setPhone(e.currentTarget.value)} />
          </label>
          <button type="submit" disabled={busy}>Send code</button>
          <button type="button" class="link" onClick={() => setStep('link')}>Link to an existing account</button>
        </form>
      ) : (
        <form onSubmit={run(() => client.verify(phone.trim(), code.trim(), name.trim() || 'Browser'))}>
          <p>We sent a 6-digit code to {phone}.</p>
          <label>
            Code
            <input name="code" inputMode="numeric" autoComplete="one-time-code" pattern="[0-9]{6}" required
              value={code} onInput={(e) => setCode(e.currentTarget.value)} />
          </label>
          <label>
            Device name
            <input name="device" value={name} maxLength={64} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <button type="submit" disabled={busy}>Verify</button>
          <button type="button" class="link" onClick={() => setStep('phone')}>Change number</button>
          <p class="hint">
            Development server? Its codes are on the admin listener:{' '}
            <code>curl http://127.0.0.1:9090/dev/codes/{encodeURIComponent(phone.trim())}</code>
          </p>
        </form>
      )}
      {error && <p class="error" role="alert">{error}</p>}
    </main>
  );
}
