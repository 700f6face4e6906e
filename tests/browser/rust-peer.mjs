// Drives ONE headless Chromium page (call-page.html) in a 1:1 call with a
// peer that is not a browser (interop/webrtc-peer, on webrtc-rs), through a
// running Palaver server. The Rust test reads this script's stdout, one JSON
// object per line:
//   {"event":"ready"}                       the page is authenticated
//   {"event":"media", "stats":{...}}        Chromium decodes remote video and receives audio
//   {"event":"window", "from":{...}, "to":{...}, "fps", "audioSamplesPerSec", "width"}
//                                           inbound statistics over `seconds`
//   {"event":"ended", "reason"}             (role "answer") the peer hung up: call_ended
//   {"event":"hung_up"}                     (role "call") this page hung up
//   {"event":"error", "error"}              then exit 1
//
// usage: node rust-peer.mjs SPEC_JSON
//   SPEC_JSON = {"wsUrl", "device", "credential", "role": "answer"|"call",
//                "to": ACCOUNT (role "call"), "seconds": 3, "timeoutMs": 30000}
import { chromium } from 'playwright-core';
import http from 'node:http';
import { readFileSync } from 'node:fs';

const spec = JSON.parse(process.argv[2]);
const timeoutMs = spec.timeoutMs ?? 30000;
const emit = (obj) => console.log(JSON.stringify(obj));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const within = (ms, what, p) => Promise.race([
  p,
  sleep(ms).then(() => { throw new Error(`timed out after ${ms} ms: ${what}`); }),
]);

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

let ok = false;
const errors = [];
let p;
try {
  const ctx = await browser.newContext();
  p = await ctx.newPage();
  p.on('pageerror', (e) => errors.push(e.message));
  await p.goto(pageUrl);
  await p.evaluate((a) => window.setup(a), {
    wsUrl: spec.wsUrl, device: spec.device, credential: spec.credential, relayOnly: false,
  });
  emit({ event: 'ready' });

  if (spec.role === 'call') {
    await within(timeoutMs, 'call_offer', p.evaluate((to) => window.placeCall(to, 'video'), spec.to));
  } else {
    await within(timeoutMs, 'call_incoming', p.evaluate(() => window.waitIncoming()));
    await within(timeoutMs, 'answer', p.evaluate(() => window.answer()));
  }

  // Until Chromium decodes the peer's video and receives its audio.
  const deadline = Date.now() + timeoutMs;
  let s = await p.evaluate(() => window.stats());
  while (!(s.videoFrames > 0 && s.audioPackets > 0)) {
    if (Date.now() > deadline) {
      const log = await p.evaluate(() => client.log);
      throw new Error(`no media within ${timeoutMs} ms: ${JSON.stringify({ stats: s, errors, log })}`);
    }
    await sleep(50);
    s = await p.evaluate(() => window.stats());
  }
  emit({ event: 'media', stats: s });

  // A measurement window (not synchronisation): rates over `seconds`.
  await sleep((spec.seconds ?? 3) * 1000);
  const t = await p.evaluate(() => window.stats());
  const secs = (t.now - s.now) / 1000;
  emit({
    event: 'window',
    from: s,
    to: t,
    fps: (t.videoFrames - s.videoFrames) / secs,
    audioSamplesPerSec: (t.audioSamples - s.audioSamples) / secs,
    width: t.width,
  });

  if (spec.role === 'call') {
    await within(timeoutMs, 'call_hangup', p.evaluate(() => window.hangup()));
    emit({ event: 'hung_up' });
  } else {
    // The peer hangs up once it has seen the window: wait for call_ended.
    await p.waitForFunction(() => window.endReason !== undefined, null, { timeout: timeoutMs, polling: 20 });
    const reason = await p.evaluate(() => window.endReason);
    emit({ event: 'ended', reason });
  }
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  ok = true;
} catch (e) {
  emit({ event: 'error', error: String((e && e.stack) || e), errors });
} finally {
  await browser.close();
  server.close();
}
process.exit(ok ? 0 : 1);
