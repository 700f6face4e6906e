import { useEffect, useRef, useState } from 'preact/hooks';
import type { Client } from './client';

function Video({ stream, label, muted }: { stream: MediaStream; label: string; muted?: boolean }) {
  const ref = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    if (ref.current && ref.current.srcObject !== stream) ref.current.srcObject = stream;
  }, [stream]);
  return <video ref={ref} autoPlay playsInline muted={muted} aria-label={label} />;
}

/** Picks contacts and starts a group call with them. */
export function GroupCallStarter({ client, onClose }: { client: Client; onClose: () => void }) {
  const [picked, setPicked] = useState<Set<number>>(new Set());
  const toggle = (p: number) => {
    const s = new Set(picked);
    if (!s.delete(p)) s.add(p);
    setPicked(s);
  };
  const start = (media: 'audio' | 'video') => () => {
    onClose();
    client.groupCalls.start([...picked], media).catch((e) => client.changed({ error: (e as Error).message }));
  };
  return (
    <fieldset class="group-pick">
      <legend>Group call with</legend>
      {client.state.chats.filter((c) => c.peer > 0).map((c) => (
        <label key={c.peer} class="pick">
          <input type="checkbox" checked={picked.has(c.peer)} onChange={() => toggle(c.peer)} /> {c.name}
        </label>
      ))}
      <button type="button" disabled={picked.size === 0} onClick={start('video')}>Start video call</button>
      <button type="button" disabled={picked.size === 0} onClick={start('audio')}>Start voice call</button>
    </fieldset>
  );
}

/** The group call: ringing, then a grid with the active speaker highlighted. */
export function GroupCallView({ client }: { client: Client }) {
  const g = client.groupCalls.state;
  const [speakerView, setSpeakerView] = useState(false);
  if (g.phase === 'idle') return null;
  const name = (account: number | null) =>
    account === null ? 'Someone' : client.state.chats.find((c) => c.peer === account)?.name ?? `#${account}`;
  const act = (fn: () => Promise<void> | void) => () => {
    Promise.resolve(fn()).catch((e) => client.changed({ error: (e as Error).message }));
  };
  if (g.phase === 'incoming') {
    return (
      <div class="call incoming" role="dialog" aria-label="Incoming group call">
        <p>Incoming group {g.media} call from <strong>{name(g.from)}</strong></p>
        <div class="controls">
          <button type="button" class="accept" onClick={act(() => client.groupCalls.accept())}>Join</button>
          <button type="button" class="decline" onClick={act(() => client.groupCalls.decline())}>Decline</button>
        </div>
      </div>
    );
  }
  const tiles = [...g.tiles.entries()];
  // Speaker view: the active speaker's tile (else the first other one) large,
  // the others in a strip below it.
  const main = speakerView ? (tiles.find(([id]) => id === g.speaker) ?? tiles[0])?.[0] : undefined;
  if (main !== undefined) tiles.sort(([a], [b]) => Number(b === main) - Number(a === main));
  // Ask the SFU for what each tile's size needs: the large tile full
  // size, strip tiles and a crowded grid the small layer.
  for (const [id] of tiles) {
    const small = main !== undefined ? id !== main : tiles.length > 3;
    client.groupCalls.prefer(id, small ? 'low' : 'high');
  }
  return (
    <div class="call group" role="dialog" aria-label="Group call">
      <ul class={`grid ${speakerView ? 'speaker' : ''}`} data-count={tiles.length + 1}>
        {g.local && (
          <li class={`tile self ${g.speaker !== null && g.speaker === g.me ? 'speaking' : ''}`}>
            <Video stream={g.local} label="My camera" muted />
            <span>You{g.muted ? ' (muted)' : ''}</span>
          </li>
        )}
        {tiles.map(([id, t]) => (
          <li key={id} class={`tile ${g.speaker === id ? 'speaking' : ''} ${id === main ? 'main' : ''}`} data-stream={id}>
            <Video stream={t.stream} label={`Video of ${name(t.account)}`} />
            <span>{name(t.account)}</span>
          </li>
        ))}
      </ul>
      <div class="controls">
        <button type="button" aria-pressed={g.muted} onClick={act(() => client.groupCalls.toggleMute())}>{g.muted ? 'Unmute' : 'Mute'}</button>
        {g.media === 'video' && (
          <button type="button" aria-pressed={g.cameraOff} onClick={act(() => client.groupCalls.toggleCamera())}>
            {g.cameraOff ? 'Camera on' : 'Camera off'}
          </button>
        )}
        <button type="button" aria-pressed={speakerView} onClick={() => setSpeakerView(!speakerView)}>
          {speakerView ? 'Grid view' : 'Speaker view'}
        </button>
        <button type="button" class="decline" onClick={act(() => client.groupCalls.leave())}>Leave</button>
      </div>
    </div>
  );
}
