import { useState } from 'preact/hooks';
import type { Client } from './client';
import type { FileRef } from './media';

function size(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** An attachment inside a bubble: thumbnail first, the file on demand. */
export function Attachment({ client, file, progress }: { client: Client; file: FileRef; progress?: number }) {
  const [url, setUrl] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const [viewing, setViewing] = useState(false);
  const kind = file.mime.startsWith('image/') ? 'image' : file.mime.startsWith('video/') ? 'video' : 'file';

  const fetchIt = async (): Promise<string | null> => {
    if (url) return url;
    setBusy(true);
    setError('');
    try {
      const u = await client.fileUrl(file);
      setUrl(u);
      return u;
    } catch (e) {
      setError((e as Error).message);
      return null;
    } finally {
      setBusy(false);
    }
  };

  const save = async () => {
    const u = await fetchIt();
    if (!u) return;
    const a = document.createElement('a');
    a.href = u;
    a.download = file.name;
    a.click();
  };

  return (
    <div class={`attachment ${kind}`}>
      {progress !== undefined && (
        <progress max={1} value={progress} aria-label={`Uploading ${file.name}`} />
      )}
      {kind === 'video' && url ? (
        <video class="player" src={url} controls preload="auto" aria-label={`Video ${file.name}`} />
      ) : file.thumb && kind !== 'file' ? (
        <button type="button" class="thumb" aria-label={`Open ${kind} ${file.name}`}
          onClick={async () => { if (await fetchIt()) setViewing(kind === 'image'); }}>
          <img src={file.thumb} alt={`Thumbnail of ${file.name}`} />
          {kind === 'video' && <span class="play" aria-hidden="true">▶{file.duration ? ` ${Math.round(file.duration)} s` : ''}</span>}
        </button>
      ) : (
        <button type="button" class="doc" onClick={save} aria-label={`Download ${file.name}`}>
          📄 {file.name} <small>{size(file.size)}</small>
        </button>
      )}
      {busy && <span class="busy">Downloading…</span>}
      {error && <span class="error" role="alert">{error}</span>}
      {viewing && url && (
        <div class="viewer" role="dialog" aria-label={`Image ${file.name}`} onClick={() => setViewing(false)}>
          <img src={url} alt={file.name} />
          <button type="button" onClick={() => setViewing(false)}>Close</button>
        </div>
      )}
    </div>
  );
}
