import { useEffect, useReducer } from 'preact/hooks';
import type { Client } from './client';
import { ChatList } from './chatlist';
import { ChatView } from './chatview';
import { CallView } from './callview';
import { GroupCallView } from './groupcallview';
import { Login } from './login';

export function App({ client }: { client: Client }) {
  const [, bump] = useReducer((n: number) => n + 1, 0);
  const rerender = () => bump(undefined);
  useEffect(() => client.subscribe(rerender), [client]);
  const s = client.state;
  if (s.status === 'starting') return <p class="splash">Loading…</p>;
  if (!s.session) return <Login client={client} />;
  return (
    <div class={`shell ${s.open !== null ? 'has-open' : ''}`}>
      <ChatList client={client} />
      {s.open !== null ? (
        <ChatView client={client} peer={s.open} key={s.open} />
      ) : (
        <main class="empty" aria-label="No chat open">
          <p>Select a chat or start a new one.</p>
        </main>
      )}
      <CallView client={client} />
      <GroupCallView client={client} />
      {s.error && (
        <div class="toast" role="alert">
          {s.error}
          <button type="button" onClick={() => client.dismissError()} aria-label="Dismiss">
            ×
          </button>
        </div>
      )}
    </div>
  );
}
