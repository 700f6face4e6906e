import { useEffect, useRef, useState } from 'preact/hooks';
import type { Client } from './client';
import type { Message, Tick } from './db';
import { presence, time } from './format';
import { Attachment } from './attachment';
import { Recorder, VoiceNote } from './voice';

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
  const list = useRef<HTMLOListElement>(null);
  const typingUntil = s.typing.get(peer) ?? 0;
  const sub = typingUntil > Date.now() ? 'typing…' : presence(s.presence.get(peer));

  useEffect(() => {
    list.current?.lastElementChild?.scrollIntoView({ block: 'end' });
  }, [s.messages.length]);

  const send = (ev: Event) => {
    ev.preventDefault();
    const t = text.trim();
    if (!t) return;
    setText('');
    void client.sendText(peer, t);
  };

  return (
    <main class="chat" aria-label={`Chat with ${chat?.name ?? peer}`}>
      <header>
        <button type="button" class="back" onClick={() => void client.openChat(null)} aria-label="Back to chats">←</button>
        <div>
          <h2>{chat?.name ?? `#${peer}`}</h2>
          <span class="sub" data-testid="chat-sub">{sub}</span>
        </div>
        <div class="call-buttons">
          <button type="button" aria-pressed={!!chat?.pinned} onClick={() => void client.setChatFlag(peer, 'pinned', !chat?.pinned)}>
            {chat?.pinned ? 'Unpin' : 'Pin'}
          </button>
          <button type="button" aria-pressed={!!chat?.archived} onClick={() => void client.setChatFlag(peer, 'archived', !chat?.archived)}>
            {chat?.archived ? 'Unarchive' : 'Archive'}
          </button>
          <button type="button" onClick={() => client.calls.start(peer, 'audio').catch((e) => client.changed({ error: e.message }))}>Voice call</button>
          <button type="button" onClick={() => client.calls.start(peer, 'video').catch((e) => client.changed({ error: e.message }))}>Video call</button>
        </div>
      </header>
      <ol class="messages" ref={list} aria-live="polite">
        {s.messages.map((m) => <Bubble client={client} m={m} progress={s.progress.get(m.key)} key={m.key} />)}
      </ol>
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
    </main>
  );
}

function Bubble({ client, m, progress }: { client: Client; m: Message; progress?: number }) {
  const [mark, label] = TICKS[m.tick];
  return (
    <li class={`bubble ${m.mine ? 'mine' : 'theirs'}`} data-msg={m.msg}>
      {m.file && m.file.waveform && <VoiceNote client={client} file={m.file} />}
      {m.file && !m.file.waveform && <Attachment client={client} file={m.file} progress={progress} />}
      {m.text && <span class="text">{m.text}</span>}
      <span class="meta">
        {time(m.ts)}
        {m.mine && <span class={`tick ${m.tick}`} data-tick={m.tick} title={label} aria-label={label}>{mark}</span>}
      </span>
    </li>
  );
}
