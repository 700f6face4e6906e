import { useState } from 'preact/hooks';
import type { Client } from './client';
import { time } from './format';
import { GroupCallStarter } from './groupcallview';
import { CallLog, Search, Statuses } from './panels';
import { NewGroup } from './groupview';
import { Settings } from './settings';

export function ChatList({ client }: { client: Client }) {
  const s = client.state;
  const [adding, setAdding] = useState(false);
  const [grouping, setGrouping] = useState(false);
  const [newGroup, setNewGroup] = useState(false);
  const [settings, setSettings] = useState(false);
  const [query, setQuery] = useState('');
  const [view, setView] = useState<'chats' | 'archived' | 'calls' | 'status'>('chats');
  const archived = s.chats.filter((c) => c.archived);
  const shown = s.chats.filter((c) => (view === 'archived' ? c.archived : !c.archived));
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
        <button type="button" onClick={() => setNewGroup(!newGroup)} aria-expanded={newGroup}>New group</button>
        <button type="button" onClick={() => setGrouping(!grouping)} aria-expanded={grouping}>Group call</button>
        <button type="button" onClick={() => setSettings(!settings)} aria-expanded={settings}>Settings</button>
        <button type="button" onClick={() => void client.logout()}>Log out</button>
      </header>
      {settings && <Settings client={client} />}
      {newGroup && <NewGroup client={client} onClose={() => setNewGroup(false)} />}
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
      <div class="tools">
        <label class="sr-only" for="search">Search messages</label>
        <input id="search" type="search" placeholder="Search messages" value={query}
          onInput={(e) => setQuery(e.currentTarget.value)} />
        <div class="tabs" role="group" aria-label="Lists">
          <button type="button" aria-pressed={view === 'chats'} onClick={() => setView('chats')}>Chats</button>
          <button type="button" aria-pressed={view === 'calls'} onClick={() => setView('calls')}>Calls</button>
          <button type="button" aria-pressed={view === 'status'} onClick={() => setView('status')}>Status</button>
          <button type="button" aria-pressed={view === 'archived'} onClick={() => setView('archived')}>Archived ({archived.length})</button>
        </div>
      </div>
      {query.trim() ? <Search client={client} query={query.trim()} /> : view === 'calls' ? <CallLog client={client} /> : view === 'status' ? <Statuses client={client} /> : (
      <ul class="chats">
        {shown.map((c) => (
          <li key={c.peer}>
            <button type="button" class={`chat-item ${s.open === c.peer ? 'active' : ''}`}
              onClick={() => void client.openChat(c.peer)} aria-current={s.open === c.peer}>
              <span class="name">{c.pinned && <span aria-label="pinned">📌 </span>}{c.group !== undefined && <span aria-label="group">👥 </span>}{c.name}</span>
              <span class="when">{time(c.lastTs)}</span>
              <span class="last">{c.lastText}</span>
              {c.unread > 0 && <span class="unread" aria-label={`${c.unread} unread`}>{c.unread}</span>}
            </button>
          </li>
        ))}
        {shown.length === 0 && <li class="none">{view === 'archived' ? 'No archived chats.' : 'No chats yet.'}</li>}
      </ul>
      )}
    </nav>
  );
}
