// Base64 helpers: the server and the Rust SDK use standard base64 with
// padding; libolm reads and writes it without padding.

export function toB64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function fromB64(text: string): Uint8Array<ArrayBuffer> {
  const s = atob(pad(text));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function pad(b64: string): string {
  return b64 + '='.repeat((4 - (b64.length % 4)) % 4);
}

export function unpad(b64: string): string {
  return b64.replace(/=+$/, '');
}

export const utf8 = {
  encode: (s: string) => new TextEncoder().encode(s),
  decode: (b: Uint8Array) => new TextDecoder().decode(b),
};
