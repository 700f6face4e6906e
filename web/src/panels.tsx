import { useEffect, useState } from 'preact/hooks';
import type { Client } from './client';
import type { Message } from './db';
import { time } from './format';
import type { Frame } from './ws';

/** Status posts: mine with who saw them, the others' to view. */
export function Statuses({ client }: { client: Client }) {
  const [text, setText] = useState('');
  const [busy, setBusy] = useState(false);
  const [open, setOpen] = useState<string | null>(null);
  const me = client.state.session!.account;
  const name = (a: number) => client.state.chats.find((c) => c.peer === a)?.name ?? `#${a}`;
  const post = async (ev: Event) => {
    ev.preventDefault();
    setBusy(true);
    try {
      await client.postStatus(text.trim());
      setText('');
    } catch (e) {
      client.changed({ error: (e as Error).message });
    } finally {
      setBusy(false);
    }
  };
  const mine = client.state.statuses.filter((s) => s.author === me);
  const theirs = client.state.statuses.filter((s) => s.author !== me);
  const shown = client.state.statuses.find((s) => s.key === open);
  return (
    <div class="statuses">
      <form class="new-chat" onSubmit={post}>
        <label>
          My status
          <input name="status" required maxLength={700} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={busy || !text.trim()}>Post status</button>
      </form>
      <ul class="chats" aria-label="My statuses">
        {mine.map((s) => (
          <li key={s.key} class="chat-item status-mine">
            <span class="name">{s.text}</span>
            <span class="when">{time(s.ts)}</span>
            <span class="last">Seen by {s.viewers.length}{s.viewers.length ? `: ${s.viewers.map(name).join(', ')}` : ''}</span>
          </li>
        ))}
      </ul>
      <ul class="chats" aria-label="Statuses of contacts">
        {theirs.map((s) => (
          <li key={s.key}>
            <button type="button" class={`chat-item ${s.seen ? '' : 'unseen'}`} aria-label={`Status of ${name(s.author)}`}
              onClick={() => { setOpen(s.key); void client.viewStatus(s).catch((e) => client.changed({ error: e.message })); }}>
              <span class="name">{name(s.author)}</span>
              <span class="when">{time(s.ts)}</span>
            </button>
          </li>
        ))}
        {theirs.length === 0 && <li class="none">No statuses from contacts.</li>}
      </ul>
      {shown && (
        <div class="viewer status-viewer" role="dialog" aria-label={`Status of ${name(shown.author)}`}>
          <p>{shown.text}</p>
          <button type="button" onClick={() => setOpen(null)}>Close</button>
        </div>
      )}
    </div>
  );
}

const MISSED = new Set(['busy', 'cancelled', 'no_answer', 'unavailable']);

/** Search across the history kept in this browser. */
export function Search({ client, query }: { client: Client; query: string }) {
  const [hits, setHits] = useState<Message[] | null>(null);
  useEffect(() => {
    let live = true;
    void client.search(query).then((h) => live && setHits(h));
    return () => { live = false; };
  }, [query, client.state.chats]);
  const name = (peer: number) => client.state.chats.find((c) => c.peer === peer)?.name ?? `#${peer}`;
  if (!hits) return null;
  return (
    <ul class="chats results" aria-label="Search results">
      {hits.map((m) => (
        <li key={m.key}>
          <button type="button" class="chat-item" onClick={() => void client.openChat(m.chat)}>
            <span class="name">{name(m.chat)}</span>
            <span class="when">{time(m.ts)}</span>
            <span class="last">{m.text || m.file?.name}</span>
          </button>
        </li>
      ))}
      {hits.length === 0 && <li class="none">No messages found.</li>}
    </ul>
  );
}

/** Calls made and received, missed ones marked. */
export function CallLog({ client }: { client: Client }) {
  const [calls, setCalls] = useState<Frame[] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    client.callHistory().then(setCalls, (e) => setError((e as Error).message));
  }, []);
  const me = client.state.session!.account;
  const name = (peer: number) => client.state.chats.find((c) => c.peer === peer)?.name ?? `#${peer}`;
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!calls) return <p class="none">Loading calls…</p>;
  return (
    <ul class="chats calls" aria-label="Call history">
      {calls.map((c) => {
        const outgoing = c.caller === me;
        const missed = !outgoing && MISSED.has(c.reason);
        const peer = outgoing ? c.callee : c.caller;
        return (
          <li key={c.call} class={missed ? 'missed' : ''} data-reason={c.reason}>
            <button type="button" class="chat-item" onClick={() => void client.openChat(peer)}>
              <span class="name">{name(peer)}</span>
              <span class="when">{time(c.started_at)}</span>
              <span class="last">
                {missed ? 'Missed' : outgoing ? 'Outgoing' : 'Incoming'} {c.media} call
                {c.answered_at && c.ended_at ? `, ${Math.round((c.ended_at - c.answered_at) / 1000)} s` : ''}
                {!missed && !c.answered_at ? ` (${String(c.reason).replace(/_/g, ' ')})` : ''}
              </span>
            </button>
          </li>
        );
      })}
      {calls.length === 0 && <li class="none">No calls yet.</li>}
    </ul>
  );
}
