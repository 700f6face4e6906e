// Call setup time: from the callee accepting to the first decoded remote
// video frame on both sides, p50/p95 over N calls, through a running Palaver
// server, next to the floor of the same two Chromium peers signalled by
// direct function calls in one page (no server at all). Runs A, B, A, B...
//
// usage: node call-setup.mjs SPEC_JSON
//   SPEC_JSON = {"wsUrl", "caller": {device, credential}, "callee": {account, device, credential},
//                "calls": 20, "relayOnly": false}
import { createRequire } from 'node:module';
import http from 'node:http';
import { readFileSync } from 'node:fs';

const require = createRequire(new URL('../../tests/browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const spec = JSON.parse(process.argv[2]);
const page = readFileSync(new URL('../../tests/browser/call-page.html', import.meta.url));
const server = http.createServer((_, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end(page); });
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/`;

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

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
const viaPalaver = []; const floor = []; const offerToAccepted = [];
try {
  const open = async (who) => {
    const p = await (await browser.newContext()).newPage();
    await p.goto(url);
    await p.evaluate((a) => window.setup(a), { wsUrl: spec.wsUrl, ...spec[who], relayOnly: !!spec.relayOnly });
    return p;
  };
  // No server: two pages like the ones above, every message carried by this
  // driver directly from one page to the other.
  const direct = async (iceServers, relayOnly) => {
    const a = await (await browser.newContext()).newPage();
    const b = await (await browser.newContext()).newPage();
    await a.goto(url);
    await b.goto(url);
    await a.exposeFunction('toPeer', (m) => b.evaluate((x) => window.fromPeer(x), m));
    await b.exposeFunction('toPeer', (m) => a.evaluate((x) => window.fromPeer(x), m));
    const sdp = await a.evaluate(([s, r]) => window.directOffer(s, r), [iceServers, relayOnly]);
    await b.evaluate(([o, s, r]) => window.directRing(o, s, r), [sdp, iceServers, relayOnly]);
    const accept = await b.evaluate(() => window.directAnswer());
    const [fa, fb] = await Promise.all([
      a.evaluate(() => window.firstFrameAt()),
      b.evaluate(() => window.firstFrameAt()),
    ]);
    await a.evaluate(() => window.closeCall());
    await b.evaluate(() => window.closeCall());
    await a.context().close();
    await b.context().close();
    return Math.max(fa, fb) - accept;
  };
  for (let i = 0; i < (spec.calls || 20); i++) {
    const caller = await open('caller');
    const callee = await open('callee');
    const t0 = Date.now();
    await caller.evaluate(([to]) => window.placeCall(to, 'video'), [spec.callee.account]);
    await callee.evaluate(() => window.waitIncoming());
    const iceServers = await callee.evaluate(() => window.iceServersSeen());
    const accept = await callee.evaluate(() => window.answerTimed());
    const [fa, fb] = await Promise.all([
      caller.evaluate(() => window.firstFrameAt()),
      callee.evaluate(() => window.firstFrameAt()),
    ]);
    viaPalaver.push(Math.max(fa, fb) - accept);
    offerToAccepted.push(accept - t0);
    await caller.evaluate(() => window.hangup());
    await callee.evaluate(() => window.waitEnded());
    await caller.context().close();
    await callee.context().close();
    floor.push(await direct(iceServers, !!spec.relayOnly));
  }
} finally {
  await browser.close();
  server.close();
}
const summary = (xs) => ({ n: xs.length, p50: Math.round(pct(xs, 0.5)), p95: Math.round(pct(xs, 0.95)), min: Math.round(Math.min(...xs)), max: Math.round(Math.max(...xs)) });
console.log(JSON.stringify({
  relayOnly: !!spec.relayOnly,
  acceptToFirstFrameViaPalaver: summary(viaPalaver),
  acceptToFirstFrameNoServer: summary(floor),
  addedByPalaverP50: Math.round(pct(viaPalaver, 0.5) - pct(floor, 0.5)),
}));
