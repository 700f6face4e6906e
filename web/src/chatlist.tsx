import { useState } from 'preact/hooks';
import type { Client } from './client';
import { time } from './format';
import { GroupCallStarter } from './groupcallview';

export function ChatList({ client }: { client: Client }) {
  const s = client.state;
  const [adding, setAdding] = useState(false);
  const [grouping, setGrouping] = useState(false);
  const [phone, setPhone] = useState('');
  const [error, setError] = useState('');

  const add = async (ev: Event) => {
    ev.preventDefault();
    setError('');
    try {
      await client.startChat(phone.trim(), phone.trim());
      setAdding(false);
      setPhone('');
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <nav class="sidebar" aria-label="Chats">
      <header>
        <div>
          <strong>{s.session!.phone}</strong>
          <span class={`status ${s.status}`}>{s.status}</span>
        </div>
        <button type="button" onClick={() => setAdding(!adding)} aria-expanded={adding}>New chat</button>
        <button type="button" onClick={() => setGrouping(!grouping)} aria-expanded={grouping}>Group call</button>
        <button type="button" onClick={() => void client.logout()}>Log out</button>
      </header>
      {grouping && <GroupCallStarter client={client} onClose={() => setGrouping(false)} />}
      {adding && (
        <form class="new-chat" onSubmit={add}>
          <label>
            Phone number of the contact
            <input name="contact" type="tel" required value={phone} onInput={(e) => setPhone(e.currentTarget.value)} />
          </label>
          <button type="submit">Start chat</button>
          {error && <p class="error" role="alert">{error}</p>}
        </form>
      )}
      <ul class="chats">
        {s.chats.map((c) => (
          <li key={c.peer}>
            <button type="button" class={`chat-item ${s.open === c.peer ? 'active' : ''}`}
              onClick={() => void client.openChat(c.peer)} aria-current={s.open === c.peer}>
              <span class="name">{c.name}</span>
              <span class="when">{time(c.lastTs)}</span>
              <span class="last">{c.lastText}</span>
              {c.unread > 0 && <span class="unread" aria-label={`${c.unread} unread`}>{c.unread}</span>}
            </button>
          </li>
        ))}
        {s.chats.length === 0 && <li class="none">No chats yet.</li>}
      </ul>
    </nav>
  );
}
