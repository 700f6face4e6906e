import type { Client } from './client';
import { Push } from './push';
import { LinkDevice } from './linking';

/** Notifications (the push toggle, "quiet for 8 hours") and linking another device. */
export function Settings({ client }: { client: Client }) {
  const p = client.pushes.state;
  const fail = (e: unknown) => client.changed({ error: (e as Error).message });
  const quiet = p.quietUntil !== null && p.quietUntil > Date.now();
  return (
    <section class="settings" aria-label="Settings">
      <label class="toggle">
        <input type="checkbox" checked={p.enabled} disabled={!Push.supported()}
          onChange={(e) => void client.pushes.setEnabled(e.currentTarget.checked).catch(fail)} />
        Notifications
      </label>
      {p.enabled && (
        <button type="button" onClick={() => void client.pushes.quiet(!quiet).catch(fail)}>
          {quiet ? 'End quiet time' : 'Quiet for 8 hours'}
        </button>
      )}
      {quiet && <p class="sub">Quiet until {new Date(p.quietUntil!).toLocaleTimeString()}</p>}
      {p.note && <p class="sub" role="status" data-testid="push-note">{p.note}</p>}
      <LinkDevice client={client} />
    </section>
  );
}
