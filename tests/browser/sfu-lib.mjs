// Shared by the two-page SFU scripts (sfu-simulcast, sfu-dynacast,
// sfu-restart): serves sfu-page.html on a loopback port, launches Debian's
// Chromium with fake media, and opens pages that join the room.
import { chromium } from 'playwright-core';
import http from 'node:http';
import { readFileSync } from 'node:fs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `check` every 200 ms until it returns a truthy value, or fails
// after `ms` with `what`.
export async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const last = await check();
    if (last) return last;
    await sleep(200);
  }
  throw new Error(`timed out: ${what}`);
}

/** Starts the page server and the browser for `spec` ({joinUrl, tokens}). */
export async function sfuHarness(spec) {
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
  const errors = [];
  return {
    errors,
    // A page in its own context that joins with token `i`.
    async open(i, simulcast) {
      const ctx = await browser.newContext();
      const p = await ctx.newPage();
      p.on('pageerror', (e) => errors.push(`page ${i}: ${e.message}`));
      await p.goto(pageUrl);
      await p.evaluate((a) => window.join(a), { joinUrl: spec.joinUrl, token: spec.tokens[i], simulcast });
      return p;
    },
    async close() {
      await browser.close();
      server.close();
    },
  };
}
