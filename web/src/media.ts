// Attachments with the sealed scheme of docs/media.md (the Rust SDK's
// palaver_client::media): a random 32-byte media key, HKDF-SHA256 (no salt,
// info "Palaver Media Keys") to IV | AES-256 key | MAC key, upload =
// AES-256-CBC-PKCS7(plaintext) || HMAC-SHA256(mac key, IV || ciphertext)[..10].
// Uploads go through tus (resumable), same origin: the server forwards
// /v1/uploads and /v1/media to its media store.

import { fromB64, toB64 } from './b64';

type Bytes = Uint8Array<ArrayBuffer>;

const INFO = new TextEncoder().encode('Palaver Media Keys');
const MAC_LEN = 10;
const CHUNK = 256 * 1024;

/** What a message carries about an attachment. */
export interface FileRef {
  id: string; // SHA-256 of the upload (hex)
  key: string; // media key, base64
  sha256: string; // SHA-256 of the plaintext (hex)
  size: number;
  name: string;
  mime: string;
  thumb?: string; // data: URL of a small JPEG
  duration?: number; // seconds (video, audio)
  waveform?: number[]; // 0..1 levels (voice notes)
}

async function keys(mediaKey: Bytes) {
  const ikm = await crypto.subtle.importKey('raw', mediaKey, 'HKDF', false, ['deriveBits']);
  const okm = new Uint8Array(
    await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: INFO }, ikm, 112 * 8),
  );
  const iv = okm.slice(0, 16);
  const aes = await crypto.subtle.importKey('raw', okm.slice(16, 48), 'AES-CBC', false, ['encrypt', 'decrypt']);
  const mac = await crypto.subtle.importKey('raw', okm.slice(48, 80), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return { iv, aes, mac };
}

async function tag(k: Awaited<ReturnType<typeof keys>>, ciphertext: Bytes): Promise<Bytes> {
  const input = new Uint8Array(16 + ciphertext.length);
  input.set(k.iv);
  input.set(ciphertext, 16);
  return new Uint8Array(await crypto.subtle.sign('HMAC', k.mac, input)).slice(0, MAC_LEN);
}

export async function sha256hex(bytes: Bytes): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (x) => x.toString(16).padStart(2, '0')).join('');
}

export async function seal(plain: Bytes) {
  const mediaKey = crypto.getRandomValues(new Uint8Array(32));
  const k = await keys(mediaKey);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-CBC', iv: k.iv }, k.aes, plain));
  const mac = await tag(k, ct);
  const bytes = new Uint8Array(ct.length + MAC_LEN);
  bytes.set(ct);
  bytes.set(mac, ct.length);
  return { bytes, key: toB64(mediaKey), sha256: await sha256hex(plain), id: await sha256hex(bytes) };
}

/** Checks the upload hash, the MAC and the plaintext hash; returns the plaintext. */
export async function open(bytes: Bytes, f: FileRef): Promise<Bytes> {
  if ((await sha256hex(bytes)) !== f.id) throw new Error('the download does not match its id');
  if (bytes.length < MAC_LEN + 16) throw new Error('the download is too short');
  const k = await keys(fromB64(f.key));
  const ct = bytes.subarray(0, bytes.length - MAC_LEN);
  const want = await tag(k, ct);
  const got = bytes.subarray(bytes.length - MAC_LEN);
  if (want.some((b, i) => b !== got[i])) throw new Error('the attachment was tampered with');
  const plain = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-CBC', iv: k.iv }, k.aes, ct));
  if ((await sha256hex(plain)) !== f.sha256) throw new Error('the attachment does not match its hash');
  return plain;
}

const TUS = { 'Tus-Resumable': '1.0.0' };

/**
 * Uploads sealed bytes with tus, in chunks; after a failed chunk it asks the
 * server for its offset (HEAD) and resumes from there, a few times with a
 * growing pause. With `resumeUrl` (an upload started before a reload) it
 * continues that upload from the server's offset; a new upload's URL is
 * handed to `started` before the first chunk. Returns the media id.
 */
export async function upload(bytes: Bytes, id: string, auth: string, progress: (f: number) => void,
  resumeUrl?: string, started?: (url: string) => Promise<void>): Promise<string> {
  let url = resumeUrl;
  let offset = url ? await resumeOffset(url, auth).catch(() => -1) : -1;
  if (!url || offset < 0) {
    url = await create(bytes.length, id, auth);
    offset = 0;
    await started?.(url);
  }
  let failures = 0;
  while (offset < bytes.length) {
    try {
      const end = Math.min(offset + CHUNK, bytes.length);
      const r = await fetch(url, {
        method: 'PATCH',
        headers: { ...TUS, Authorization: auth, 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': String(offset) },
        body: bytes.subarray(offset, end),
      });
      if (r.status !== 204) throw new Error(`upload chunk refused: HTTP ${r.status}`);
      offset = Number(r.headers.get('Upload-Offset'));
      failures = 0;
      progress(offset / bytes.length);
      const done = r.headers.get('Palaver-Media-Id');
      if (done) return done;
    } catch (e) {
      if (++failures > 5) throw e;
      await new Promise((r) => setTimeout(r, 500 * 2 ** failures));
      offset = await resumeOffset(url, auth);
    }
  }
  return id;
}

async function create(length: number, id: string, auth: string): Promise<string> {
  const meta = `kind ${btoa('sealed')},sha256 ${btoa(id)}`;
  const created = await fetch('/v1/uploads', {
    method: 'POST',
    headers: { ...TUS, Authorization: auth, 'Upload-Length': String(length), 'Upload-Metadata': meta },
  });
  if (created.status !== 201) throw new Error(`upload refused: HTTP ${created.status}`);
  return created.headers.get('Location')!;
}

async function resumeOffset(url: string, auth: string): Promise<number> {
  const r = await fetch(url, { method: 'HEAD', headers: { ...TUS, Authorization: auth } });
  if (r.status !== 200 && r.status !== 204) throw new Error(`upload lost: HTTP ${r.status}`);
  return Number(r.headers.get('Upload-Offset'));
}

export async function download(f: FileRef, auth: string): Promise<Blob> {
  const r = await fetch(`/v1/media/${f.id}`, { headers: { Authorization: auth } });
  if (r.status !== 200) throw new Error(`download failed: HTTP ${r.status}`);
  const plain = await open(new Uint8Array(await r.arrayBuffer()), f);
  return new Blob([plain], { type: f.mime || 'application/octet-stream' });
}

const THUMB = 160;

function drawThumb(src: CanvasImageSource, w: number, h: number): string {
  const scale = Math.min(1, THUMB / Math.max(w, h));
  const c = document.createElement('canvas');
  c.width = Math.max(1, Math.round(w * scale));
  c.height = Math.max(1, Math.round(h * scale));
  c.getContext('2d')!.drawImage(src, 0, 0, c.width, c.height);
  return c.toDataURL('image/jpeg', 0.7);
}

/** A thumbnail (and duration) made in the page: images drawn, videos at their first frames. */
export async function preview(file: File): Promise<{ thumb?: string; duration?: number }> {
  if (file.type.startsWith('image/')) {
    const bmp = await createImageBitmap(file);
    const thumb = drawThumb(bmp, bmp.width, bmp.height);
    bmp.close();
    return { thumb };
  }
  if (file.type.startsWith('video/')) return videoPreview(file);
  return {};
}

function videoPreview(file: File): Promise<{ thumb?: string; duration?: number }> {
  const url = URL.createObjectURL(file);
  const v = document.createElement('video');
  v.muted = true;
  v.preload = 'auto';
  return new Promise((resolve) => {
    const finish = (r: { thumb?: string; duration?: number }) => {
      URL.revokeObjectURL(url);
      resolve(r);
    };
    v.onloadeddata = () => { v.currentTime = Math.min(0.5, (v.duration || 1) / 2); };
    v.onseeked = () => finish({ thumb: drawThumb(v, v.videoWidth, v.videoHeight), duration: v.duration });
    v.onerror = () => finish({});
    v.src = url;
  });
}
