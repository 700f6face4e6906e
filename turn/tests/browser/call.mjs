// Two headless Chromium pages call each other with iceTransportPolicy 'relay'
// through the TURN server given on the command line. Prints the inbound stats
// of both pages as JSON; exits 0 when both decode video over a relay pair.
// usage: node call.mjs PAGE_URL TURN_URL USERNAME PASSWORD
import { chromium } from 'playwright-core';

const [pageUrl, turnUrl, username, credential] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--disable-domain-reliability', '--no-pings',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
  ],
});
let ok = false;
try {
  const context = await browser.newContext();
  const a = await context.newPage();
  const b = await context.newPage();
  await a.goto(pageUrl);
  await b.goto(pageUrl);
  const iceServers = [{ urls: [turnUrl], username, credential }];
  await a.evaluate((s) => window.start(s), iceServers);
  await b.evaluate((s) => window.start(s), iceServers);
  const offer = await a.evaluate(() => window.makeOffer());
  const answer = await b.evaluate((o) => window.makeAnswer(o), offer);
  await a.evaluate((o) => window.acceptAnswer(o), answer);
  const deadline = Date.now() + 30000;
  let ra; let rb;
  while (Date.now() < deadline) {
    ra = await a.evaluate(() => window.inbound());
    rb = await b.evaluate(() => window.inbound());
    ok = ra.relay && rb.relay && ra.frames >= 30 && rb.frames >= 30;
    if (ok) break;
    await a.waitForTimeout(250);
  }
  console.log(JSON.stringify({ ok, a: ra, b: rb }));
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
