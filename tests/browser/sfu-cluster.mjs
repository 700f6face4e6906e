// Headless Chromium pages in a group call, driven step by step by a Rust
// test (tests/tests/sfu_cluster.rs) over stdin/stdout: one JSON command per
// line in, one JSON reply per line out ({"ok": true, ...} or
// {"ok": false, "error"}).
//
// Commands:
//   {"cmd": "join", "page", "joinUrl", "token", "iceServers"?, "relayOnly"?}
//                                                     open page `page` and join
//   {"cmd": "wait_media", "page", "n", "ms"}          until it decodes audio and video from n others
//   {"cmd": "moved", "page", "frame"}                 hand it a group_call_moved frame (it rejoins)
//   {"cmd": "rates", "pages", "seconds"}              frame and sample rates per remote stream
//   {"cmd": "candidates", "pages"}                    local candidate type of each selected pair
//   {"cmd": "send", "page", "msg"}                    send msg on the page's data channel
//   {"cmd": "wait_event", "page", "type", "ms"}       until the SFU sent the page a `type` message
//   {"cmd": "quit"}
// Times are wall clock (Date.now()), comparable with the test's clock.
import { chromium } from 'playwright-core';
import http from 'node:http';
import readline from 'node:readline';
import { readFileSync } from 'node:fs';

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
const pages = {};
const errors = [];

// Until `page` decodes video and audio from `n` others (since its last join).
async function waitMedia(page, n, ms) {
  const deadline = Date.now() + ms;
  let s;
  while (Date.now() < deadline) {
    s = await page.evaluate(() => window.stats());
    const ok = Object.entries(s.streams)
      .filter(([id, x]) => x.frames > 0 && x.samples > 0 && s.firstFrameWall[id]).length;
    if (ok >= n) return s;
    await sleep(20);
  }
  throw new Error(`no media from ${n} others: ${JSON.stringify(s)}`);
}

async function rates(list, seconds) {
  const before = await Promise.all(list.map((p) => p.evaluate(() => window.stats())));
  await sleep(seconds * 1000);
  const after = await Promise.all(list.map((p) => p.evaluate(() => window.stats())));
  return after.map((a, i) => {
    const b = before[i]; const dt = (a.now - b.now) / 1000; const r = {};
    for (const [id, x] of Object.entries(a.streams)) {
      const y = b.streams[id] || { frames: 0, samples: 0 };
      r[id] = { fps: (x.frames - y.frames) / dt, samplesPerSec: (x.samples - y.samples) / dt };
    }
    return r;
  });
}

async function run(c) {
  switch (c.cmd) {
    case 'join': {
      const ctx = await browser.newContext();
      const p = await ctx.newPage();
      p.on('pageerror', (e) => errors.push(`page ${c.page}: ${e.message}`));
      await p.goto(pageUrl);
      await p.evaluate((a) => window.join(a), {
        joinUrl: c.joinUrl, token: c.token, iceServers: c.iceServers, relayOnly: c.relayOnly,
      });
      pages[c.page] = p;
      return {};
    }
    case 'wait_media': {
      const s = await waitMedia(pages[c.page], c.n, c.ms);
      return { firstFrameWall: s.firstFrameWall };
    }
    case 'moved': {
      const at = Date.now();
      await pages[c.page].evaluate((f) => window.groupCallMoved(f), c.frame);
      return { at, joined: Date.now() };
    }
    case 'rates':
      return { rates: await rates(c.pages.map((i) => pages[i]), c.seconds) };
    case 'candidates':
      return { types: await Promise.all(c.pages.map((i) => pages[i].evaluate(() => window.candidateType()))) };
    case 'send':
      await pages[c.page].evaluate((m) => window.send(m), c.msg);
      return {};
    case 'wait_event': {
      const deadline = Date.now() + c.ms;
      while (Date.now() < deadline) {
        const ev = await pages[c.page].evaluate(() => window.events());
        const found = ev.find((e) => e.type === c.type);
        if (found) return { event: found };
        await sleep(20);
      }
      throw new Error(`no ${c.type} message`);
    }
    case 'quit':
      return { errors };
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  let c;
  let reply;
  try {
    c = JSON.parse(line);
    reply = { ok: true, ...(await run(c)) };
  } catch (e) {
    reply = { ok: false, error: String((e && e.stack) || e), errors };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
  if (c && c.cmd === 'quit') break;
}
await browser.close();
server.close();
