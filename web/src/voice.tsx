import { useEffect, useRef, useState } from 'preact/hooks';
import type { Client } from './client';
import type { FileRef } from './media';

const BARS = 40;

/** Levels (0..1) of `bars` equal slices of the recording, and its duration. */
async function analyse(blob: Blob): Promise<{ waveform: number[]; duration: number }> {
  const ctx = new AudioContext();
  try {
    const audio = await ctx.decodeAudioData(await blob.arrayBuffer());
    const data = audio.getChannelData(0);
    const per = Math.max(1, Math.floor(data.length / BARS));
    const rms: number[] = [];
    for (let b = 0; b < BARS; b++) {
      let sum = 0;
      for (let i = b * per; i < Math.min(data.length, (b + 1) * per); i++) sum += data[i] * data[i];
      rms.push(Math.sqrt(sum / per));
    }
    const max = Math.max(...rms, 1e-6);
    return { waveform: rms.map((r) => Math.round((r / max) * 100) / 100), duration: audio.duration };
  } finally {
    void ctx.close();
  }
}

/** The record button of the composer: records with MediaRecorder, sends on stop. */
export function Recorder({ client, peer }: { client: Client; peer: number }) {
  const [rec, setRec] = useState<MediaRecorder | null>(null);
  const [secs, setSecs] = useState(0);
  const chunks = useRef<Blob[]>([]);

  useEffect(() => {
    if (!rec) return;
    const started = Date.now();
    const t = window.setInterval(() => setSecs(Math.floor((Date.now() - started) / 1000)), 250);
    return () => window.clearInterval(t);
  }, [rec]);

  const start = async () => {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const r = new MediaRecorder(stream);
      chunks.current = [];
      r.ondataavailable = (e) => chunks.current.push(e.data);
      r.onstop = async () => {
        stream.getTracks().forEach((t) => t.stop());
        const blob = new Blob(chunks.current, { type: r.mimeType || 'audio/webm' });
        const look = await analyse(blob);
        const file = new File([blob], 'voice-note.webm', { type: blob.type.split(';')[0] });
        await client.sendFile(peer, file, look);
      };
      r.start();
      setSecs(0);
      setRec(r);
    } catch (e) {
      client.changed({ error: `Cannot record: ${(e as Error).message}` });
    }
  };

  const stop = () => {
    rec?.stop();
    setRec(null);
  };

  return rec ? (
    <button type="button" class="record on" onClick={stop} aria-label="Stop and send voice note">
      ■ <span data-testid="rec-time">{`0:${String(secs).padStart(2, '0')}`}</span>
    </button>
  ) : (
    <button type="button" class="record" onClick={() => void start()} aria-label="Record voice note">🎤</button>
  );
}

/** A voice note: play/pause and its waveform, the played part highlighted. */
export function VoiceNote({ client, file }: { client: Client; file: FileRef }) {
  const audio = useRef<HTMLAudioElement | null>(null);
  const [playing, setPlaying] = useState(false);
  const [at, setAt] = useState(0);
  const [error, setError] = useState('');
  const duration = file.duration || 1;

  const toggle = async () => {
    try {
      if (!audio.current) {
        const a = new Audio(await client.fileUrl(file));
        a.ontimeupdate = () => setAt(a.currentTime);
        a.onended = () => { setPlaying(false); setAt(0); };
        audio.current = a;
      }
      const a = audio.current;
      if (a.paused) {
        await a.play();
        setPlaying(true);
      } else {
        a.pause();
        setPlaying(false);
      }
    } catch (e) {
      setError((e as Error).message);
    }
  };

  const bars = file.waveform ?? [];
  const played = Math.floor((at / duration) * bars.length);
  return (
    <div class="voice" data-playing={playing} data-at={at.toFixed(2)}>
      <button type="button" onClick={() => void toggle()} aria-label={playing ? 'Pause voice note' : 'Play voice note'}>
        {playing ? '❚❚' : '▶'}
      </button>
      <svg class="wave" viewBox={`0 0 ${bars.length * 4} 32`} role="img" aria-label={`Voice note, ${Math.round(duration)} seconds`}>
        {bars.map((v, i) => {
          const h = Math.max(2, v * 30);
          return <rect key={i} x={i * 4} y={(32 - h) / 2} width={3} height={h} class={i < played ? 'played' : ''} />;
        })}
      </svg>
      <span class="dur">{`0:${String(Math.round(duration)).padStart(2, '0')}`}</span>
      {error && <span class="error" role="alert">{error}</span>}
    </div>
  );
}
