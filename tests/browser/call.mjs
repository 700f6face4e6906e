// Drives a 1:1 call between two headless Chromium pages through a running
// Palaver server, using only the /v1/ws protocol and the browser's WebRTC.
// Prints one JSON line with both pages' inbound statistics and exits 0 when
// both sides decode audio and video at no less than MIN_FPS.
//
// usage: node call.mjs SPEC_JSON
//   SPEC_JSON = {"wsUrl", "caller": {device, credential}, "callee": {account, device, credential},
//                "relayOnly": bool, "media": "video"|"audio", "minFps": 15, "seconds": 3}
import { chromium } from 'playwright-core';
import http from 'node:http';
import { readFileSync } from 'node:fs';

const spec = JSON.parse(process.argv[2]);
const page = readFileSync(new URL('./call-page.html', import.meta.url));
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(page);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const pageUrl = `http://127.0.0.1:${server.address().port}/call.html`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--disable-domain-reliability', '--no-pings',
    '--use-fake-device-for-media-stream=fps=30', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
  ],
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let result = { ok: false };
try {
  const errors = [];
  const open = async (who) => {
    const ctx = await browser.newContext();
    const p = await ctx.newPage();
    p.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
    await p.goto(pageUrl);
    const creds = spec[who];
    await p.evaluate((a) => window.setup(a), {
      wsUrl: spec.wsUrl, device: creds.device, credential: creds.credential, relayOnly: !!spec.relayOnly,
    });
    return p;
  };
  const caller = await open('caller');
  const callee = await open('callee');
  const media = spec.media || 'video';
  const t0 = Date.now();
  await caller.evaluate(([to, m]) => window.placeCall(to, m), [spec.callee.account, media]);
  await callee.evaluate(() => window.waitIncoming());
  const tAccept = Date.now();
  await callee.evaluate(() => window.answer());

  // Wait until both sides decode, then measure the frame rate over a window.
  const minFps = spec.minFps ?? 15;
  const seconds = spec.seconds ?? 3;
  const deadline = Date.now() + 30000;
  let firstFrame = null;
  let a; let b;
  while (Date.now() < deadline) {
    a = await caller.evaluate(() => window.stats());
    b = await callee.evaluate(() => window.stats());
    const videoOk = media !== 'video' || (a.videoFrames > 0 && b.videoFrames > 0);
    if (videoOk && a.audioPackets > 0 && b.audioPackets > 0) { firstFrame = Date.now(); break; }
    await sleep(50);
  }
  if (firstFrame === null) throw new Error(`no media within 30 s: ${JSON.stringify({ a, b, errors })}`);
  const a0 = a; const b0 = b;
  await sleep(seconds * 1000);
  a = await caller.evaluate(() => window.stats());
  b = await callee.evaluate(() => window.stats());
  const rate = (x1, x0) => (x1.videoFrames - x0.videoFrames) / ((x1.now - x0.now) / 1000);
  const side = (x1, x0) => ({
    fps: media === 'video' ? rate(x1, x0) : null,
    width: x1.width,
    audioSamplesPerSec: (x1.audioSamples - x0.audioSamples) / ((x1.now - x0.now) / 1000),
    relay: x1.relay,
    localType: x1.localType,
    remoteType: x1.remoteType,
  });
  const sa = side(a, a0); const sb = side(b, b0);
  await caller.evaluate(() => window.hangup());
  // History is committed before call_ended is pushed.
  const endReason = await callee.evaluate(() => window.waitEnded());
  const history = await callee.evaluate(() => window.callHistory());
  const relayOk = !spec.relayOnly || (sa.relay && sb.relay);
  const fpsOk = media !== 'video' || (sa.fps >= minFps && sb.fps >= minFps);
  const audioOk = sa.audioSamplesPerSec > 8000 && sb.audioSamplesPerSec > 8000;
  result = {
    ok: relayOk && fpsOk && audioOk && errors.length === 0,
    caller: sa, callee: sb, errors,
    setupMs: { offerToFirstMedia: firstFrame - t0, acceptToFirstMedia: firstFrame - tAccept },
    endReason,
    history,
  };
} catch (e) {
  result = { ok: false, error: String(e && e.stack || e) };
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
