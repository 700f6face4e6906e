// One headless Chromium page in a group call through Palaver's SFU with a
// participant that is not a browser (interop/webrtc-peer). Waits until the
// page decodes the other's audio and video, measures over `seconds`, and
// prints one JSON line; exits 0 when the video reached minFps.
//
// usage: node sfu-one.mjs SPEC_JSON
//   SPEC_JSON = {"joinUrl", "token", "minFps": 15, "seconds": 3}
import { chromium } from 'playwright-core';
import http from 'node:http';
import { readFileSync } from 'node:fs';

const spec = JSON.parse(process.argv[2]);
const html = readFileSync(new URL('./sfu-page.html', import.meta.url));
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(html);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
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
const errors = [];
let result = { ok: false };
try {
  const p = await (await browser.newContext()).newPage();
  p.on('pageerror', (e) => errors.push(e.message));
  await p.goto(`http://127.0.0.1:${server.address().port}/sfu.html`);
  await p.evaluate((a) => window.join(a), { joinUrl: spec.joinUrl, token: spec.token });
  const deadline = Date.now() + 30000;
  let s;
  for (;;) {
    s = await p.evaluate(() => window.stats());
    if (Object.values(s.streams).some((x) => x.frames > 0 && x.samples > 0)) break;
    if (Date.now() > deadline) throw new Error(`no media: ${JSON.stringify(s)}`);
    await sleep(50);
  }
  const before = s;
  await sleep((spec.seconds ?? 3) * 1000);
  const after = await p.evaluate(() => window.stats());
  const id = Object.keys(after.streams)[0];
  const dt = (after.now - before.now) / 1000;
  const fps = (after.streams[id].frames - before.streams[id].frames) / dt;
  const samplesPerSec = (after.streams[id].samples - before.streams[id].samples) / dt;
  result = {
    ok: fps >= (spec.minFps ?? 15) && samplesPerSec > 8000 && errors.length === 0,
    fps, samplesPerSec, width: after.streams[id].width, stream: id, errors,
  };
  await p.evaluate(() => window.leave());
} catch (e) {
  result = { ok: false, error: String(e && e.stack || e), errors };
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
