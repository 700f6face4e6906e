import { useEffect, useRef } from 'preact/hooks';
import type { Client } from './client';

function Video({ stream, label, muted }: { stream: MediaStream | null; label: string; muted?: boolean }) {
  const ref = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    if (ref.current && ref.current.srcObject !== stream) ref.current.srcObject = stream;
  }, [stream]);
  return <video ref={ref} autoPlay playsInline muted={muted} aria-label={label} />;
}

/** The call screen: ringing (incoming or outgoing) and the call itself. */
export function CallView({ client }: { client: Client }) {
  const c = client.calls.state;
  if (c.phase === 'idle') return null;
  const name = client.state.chats.find((x) => x.peer === c.peer)?.name ?? `#${c.peer}`;
  const act = (fn: () => Promise<void> | void) => () => {
    Promise.resolve(fn()).catch((e) => client.changed({ error: (e as Error).message }));
  };
  return (
    <div class={`call ${c.phase}`} role="dialog" aria-label={`Call with ${name}`}>
      {c.phase === 'incoming' && (
        <div class="ring">
          <p>Incoming {c.media} call from <strong>{name}</strong></p>
          <button type="button" class="accept" onClick={act(() => client.calls.accept())}>Accept</button>
          <button type="button" class="decline" onClick={act(() => client.calls.reject())}>Decline</button>
        </div>
      )}
      {c.phase !== 'incoming' && (
        <>
          <div class="stage">
            <Video stream={c.remote} label="Remote video" />
            {c.local && c.media === 'video' && <Video stream={c.local} label="My camera" muted />}
          </div>
          <p class="who">{c.phase === 'outgoing' ? `Calling ${name}…` : name}</p>
          <div class="controls">
            <button type="button" aria-pressed={c.muted} onClick={act(() => client.calls.toggleMute())}>
              {c.muted ? 'Unmute' : 'Mute'}
            </button>
            {c.media === 'video' && (
              <button type="button" aria-pressed={c.cameraOff} onClick={act(() => client.calls.toggleCamera())}>
                {c.cameraOff ? 'Camera on' : 'Camera off'}
              </button>
            )}
            <button type="button" class="decline" onClick={act(() => client.calls.hangup())}>Hang up</button>
          </div>
        </>
      )}
    </div>
  );
}
