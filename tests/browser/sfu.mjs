// Drives a group call of headless Chromium pages through Palaver's SFU.
// Prints one JSON line of measurements and exits 0 when every check passed.
//
// usage: node sfu.mjs SPEC_JSON
//   SPEC_JSON = {"joinUrl", "tokens": [4 join tokens], "minFps": 15, "seconds": 3}
// Pages 0-2 join; each must decode the two others' audio and video at
// minFps or more. Page 2 leaves; pages 0 and 1 must keep decoding each
// other. Page 3 joins late; it must decode its first keyframe from each
// of the others within 1 s of accepting the SFU's offer for their tracks.
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
const pageUrl = `http://127.0.0.1:${server.address().port}/sfu.html`;

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
const minFps = spec.minFps ?? 15;
const seconds = spec.seconds ?? 3;
const errors = [];

async function open(i) {
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  p.on('pageerror', (e) => errors.push(`page ${i}: ${e.message}`));
  await p.goto(pageUrl);
  await p.evaluate((a) => window.join(a), { joinUrl: spec.joinUrl, token: spec.tokens[i] });
  return p;
}

// Waits until `page` decodes video and audio from `n` others.
async function waitMedia(page, n, ms) {
  const deadline = Date.now() + ms;
  let s;
  while (Date.now() < deadline) {
    s = await page.evaluate(() => window.stats());
    const ok = Object.values(s.streams).filter((x) => x.frames > 0 && x.samples > 0).length;
    if (ok >= n) return s;
    await sleep(50);
  }
  throw new Error(`no media from ${n} others: ${JSON.stringify(s)}`);
}

// Frame and sample rates per remote stream over `seconds`.
async function rates(pages) {
  const before = await Promise.all(pages.map((p) => p.evaluate(() => window.stats())));
  await sleep(seconds * 1000);
  const after = await Promise.all(pages.map((p) => p.evaluate(() => window.stats())));
  return after.map((a, i) => {
    const b = before[i]; const dt = (a.now - b.now) / 1000; const r = {};
    for (const [id, x] of Object.entries(a.streams)) {
      const y = b.streams[id] || { frames: 0, samples: 0 };
      r[id] = { fps: (x.frames - y.frames) / dt, samplesPerSec: (x.samples - y.samples) / dt, width: x.width };
    }
    return r;
  });
}

const good = (r, n) => Object.values(r).filter((x) => x.fps >= minFps && x.samplesPerSec > 8000).length >= n;

let result = { ok: false };
try {
  const pages = [];
  for (let i = 0; i < 3; i++) pages.push(await open(i));
  for (const p of pages) await waitMedia(p, 2, 30000);
  const three = await rates(pages);
  const threeOk = three.every((r) => good(r, 2));

  await pages[2].evaluate(() => window.leave());
  // The others are told, and keep decoding each other.
  const leftSeen = [];
  for (const p of pages.slice(0, 2)) {
    const deadline = Date.now() + 10000;
    let seen = false;
    while (!seen && Date.now() < deadline) {
      seen = (await p.evaluate(() => window.events())).some((e) => e.type === 'left');
      if (!seen) await sleep(50);
    }
    leftSeen.push(seen);
  }
  const two = await rates(pages.slice(0, 2));
  const twoOk = two.every((r) => good(r, 1));

  // A late joiner: time from its answer to the SFU's offer (its
  // subscription) to the first decoded frame of both others.
  const late = await open(3);
  const s = await waitMedia(late, 2, 10000);
  // From accepting the SFU's offer for the others' tracks to the first
  // frame shown of the slower of the two (requestVideoFrameCallback).
  const keyframeMs = Math.max(...Object.values(s.firstFrame)) - s.lastAnswer;
  const lateRates = await rates([late]);
  const lateOk = good(lateRates[0], 2);
  result = {
    ok: threeOk && leftSeen.every(Boolean) && twoOk && lateOk && keyframeMs < 1000 && errors.length === 0,
    three, leftSeen, two, late: { keyframeMs, rates: lateRates[0] }, errors,
  };
} catch (e) {
  result = { ok: false, error: String(e && e.stack || e), errors };
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
