import { useEffect, useRef, useState } from 'preact/hooks';
import type { Client } from './client';
import type { Message, Tick } from './db';
import { presence, time } from './format';
import { Attachment } from './attachment';
import { Recorder, VoiceNote } from './voice';
import { GroupMembers } from './groupview';

const TICKS: Record<Tick, [string, string]> = {
  pending: ['🕓', 'sending'],
  sent: ['✓', 'sent'],
  delivered: ['✓✓', 'delivered'],
  read: ['✓✓', 'read'],
  failed: ['!', 'not sent'],
};

export function ChatView({ client, peer }: { client: Client; peer: number }) {
  const s = client.state;
  const chat = s.chats.find((c) => c.peer === peer);
  const [text, setText] = useState('');
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<Message | null>(null);
  const fail = (e: unknown) => client.changed({ error: (e as Error).message });
  const actions: Actions = {
    reply: (m) => { setEditing(null); setReplyTo(m); },
    edit: (m) => { setReplyTo(null); setEditing(m); setText(m.text); },
    react: (m, emoji) => void client.react(m, emoji).catch(fail),
    deleteForMe: (m) => void client.deleteForMe(m).catch(fail),
    deleteForEveryone: (m) => void client.deleteForEveryone(m).catch(fail),
  };
  const list = useRef<HTMLOListElement>(null);
  const typingUntil = s.typing.get(peer) ?? 0;
  const isGroup = chat?.group !== undefined;
  const [showMembers, setShowMembers] = useState(false);
  const sub = isGroup
    ? chat!.left ? 'You are no longer a member' : `${chat!.members?.length ?? 0} members`
    : typingUntil > Date.now() ? 'typing…' : presence(s.presence.get(peer));

  useEffect(() => {
    list.current?.lastElementChild?.scrollIntoView({ block: 'end' });
  }, [s.messages.length]);

  const send = (ev: Event) => {
    ev.preventDefault();
    const t = text.trim();
    if (!t) return;
    setText('');
    if (editing) void client.edit(editing, t).catch(fail);
    else void client.sendText(peer, t, replyTo ?? undefined);
    setEditing(null);
    setReplyTo(null);
  };

  return (
    <main class="chat" aria-label={isGroup ? `Group ${chat?.name}` : `Chat with ${chat?.name ?? peer}`}>
      <header>
        <button type="button" class="back" onClick={() => void client.openChat(null)} aria-label="Back to chats">←</button>
        <div>
          <h2>{chat?.name ?? `#${peer}`}</h2>
          <span class="sub" data-testid="chat-sub">{sub}</span>
          {chat?.timer ? <span class="sub disappearing" data-testid="chat-timer">Disappearing messages: {TIMERS.find(([v]) => v === chat.timer)?.[1] ?? `${chat.timer} s`}</span> : null}
        </div>
        <label class="timer">
          <span class="sr-only">Disappearing messages</span>
          <select aria-label="Disappearing messages" value={String(chat?.timer ?? 0)}
            onChange={(e) => void client.setTimer(peer, Number(e.currentTarget.value)).catch(fail)}>
            {TIMERS.map(([v, l]) => <option key={v} value={String(v)}>{l}</option>)}
          </select>
        </label>
        <div class="call-buttons">
          <button type="button" aria-pressed={!!chat?.pinned} onClick={() => void client.setChatFlag(peer, 'pinned', !chat?.pinned)}>
            {chat?.pinned ? 'Unpin' : 'Pin'}
          </button>
          <button type="button" aria-pressed={!!chat?.archived} onClick={() => void client.setChatFlag(peer, 'archived', !chat?.archived)}>
            {chat?.archived ? 'Unarchive' : 'Archive'}
          </button>
          {isGroup ? (
            <>
              <button type="button" aria-expanded={showMembers} onClick={() => setShowMembers(!showMembers)}>Members</button>
              {!chat!.left && (
                <button type="button" onClick={() => client.groupCalls.start([], 'video', chat!.group).catch((e) => client.changed({ error: e.message }))}>
                  Group video call
                </button>
              )}
            </>
          ) : (
            <>
              <button type="button" onClick={() => client.calls.start(peer, 'audio').catch((e) => client.changed({ error: e.message }))}>Voice call</button>
              <button type="button" onClick={() => client.calls.start(peer, 'video').catch((e) => client.changed({ error: e.message }))}>Video call</button>
            </>
          )}
        </div>
      </header>
      {isGroup && showMembers && <GroupMembers client={client} chat={chat!} />}
      <ol class="messages" ref={list} aria-live="polite">
        {s.messages.map((m) => <Bubble client={client} m={m} progress={s.progress.get(m.key)} actions={actions} key={m.key} />)}
      </ol>
      {(replyTo || editing) && (
        <div class="composing" role="status">
          {replyTo ? <span>Replying to: {replyTo.text || replyTo.file?.name}</span> : <span>Editing message</span>}
          <button type="button" onClick={() => { setReplyTo(null); setEditing(null); setText(''); }}>Cancel</button>
        </div>
      )}
      {chat?.left ? <p class="composer left" role="status">You can no longer send messages to this group.</p> : (
      <form class="composer" onSubmit={send}>
        <label class="attach" title="Attach a file">
          <span aria-hidden="true">📎</span>
          <input type="file" class="sr-only" aria-label="Attach file" multiple
            onChange={(e) => {
              const files = Array.from(e.currentTarget.files ?? []);
              e.currentTarget.value = '';
              for (const f of files) void client.sendFile(peer, f);
            }} />
        </label>
        <label class="sr-only" for="composer">Message</label>
        <input id="composer" name="message" autoComplete="off" placeholder="Message" value={text}
          onInput={(e) => { setText(e.currentTarget.value); client.typing(peer, true); }} />
        <Recorder client={client} peer={peer} />
        <button type="submit" disabled={!text.trim()}>Send</button>
      </form>
      )}
    </main>
  );
}

interface Actions {
  reply: (m: Message) => void;
  edit: (m: Message) => void;
  react: (m: Message, emoji: string) => void;
  deleteForMe: (m: Message) => void;
  deleteForEveryone: (m: Message) => void;
}

const EMOJI = ['👍', '❤️', '😂'];

const TIMERS: [number, string][] = [[0, 'Off'], [86400, '24 hours'], [604800, '7 days'], [7776000, '90 days']];

function Menu({ m, actions }: { m: Message; actions: Actions }) {
  const [open, setOpen] = useState(false);
  const run = (fn: () => void) => () => { setOpen(false); fn(); };
  return (
    <span class="menu">
      <button type="button" class="more" aria-expanded={open} aria-label="Message actions" onClick={() => setOpen(!open)}>⋯</button>
      {open && (
        <span class="actions" role="group" aria-label="Actions">
          <button type="button" onClick={run(() => actions.reply(m))}>Reply</button>
          {EMOJI.map((e) => (
            <button type="button" key={e} aria-label={`React ${e}`} onClick={run(() => actions.react(m, e))}>{e}</button>
          ))}
          {m.mine && !m.file && <button type="button" onClick={run(() => actions.edit(m))}>Edit</button>}
          <button type="button" onClick={run(() => actions.deleteForMe(m))}>Delete for me</button>
          {m.mine && <button type="button" onClick={run(() => actions.deleteForEveryone(m))}>Delete for everyone</button>}
        </span>
      )}
    </span>
  );
}

function Bubble({ client, m, progress, actions }: { client: Client; m: Message; progress?: number; actions: Actions }) {
  const [mark, label] = TICKS[m.tick];
  if (m.system) {
    return <li class="system" data-msg={m.msg}>{m.text}</li>;
  }
  if (m.deleted) {
    return (
      <li class={`bubble deleted ${m.mine ? 'mine' : 'theirs'}`} data-msg={m.msg}>
        <em>This message was deleted</em>
      </li>
    );
  }
  const reactions = Object.values(m.reactions ?? {});
  return (
    <li class={`bubble ${m.mine ? 'mine' : 'theirs'}`} data-msg={m.msg}>
      <Menu m={m} actions={actions} />
      {m.fromName && <span class="from">{m.fromName}</span>}
      {m.replyTo && <blockquote class="quote">{m.replyTo.text}</blockquote>}
      {m.file && m.file.waveform && <VoiceNote client={client} file={m.file} />}
      {m.file && !m.file.waveform && <Attachment client={client} file={m.file} progress={progress} />}
      {m.text && <span class="text">{m.text}</span>}
      {reactions.length > 0 && <span class="reactions" aria-label="Reactions">{reactions.join(' ')}</span>}
      <span class="meta">
        {m.edited && <span class="edited">edited </span>}
        {time(m.ts)}
        {m.mine && <span class={`tick ${m.tick}`} data-tick={m.tick} title={label} aria-label={label}>{mark}</span>}
      </span>
    </li>
  );
}
