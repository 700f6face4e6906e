// Drives Palaver's web client (web/, served by `palaver serve` at `/`) in two
// headless Chromium contexts: two users register with the dev verifier's
// codes, chat both ways end-to-end encrypted, see typing, presence and
// read ticks, reload (history and session survive) and log out. Writes a
// screenshot of each main screen to OUT_DIR and prints one JSON line.
// Any console error or page error fails the run.
//
// usage: node web-chat.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl": "http://127.0.0.1:PORT", "adminUrl": "http://127.0.0.1:PORT",
//                "phones": ["+49...", "+49..."], "outDir": "/path/for/screenshots"}
import { chromium } from 'playwright-core';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const spec = JSON.parse(process.argv[2]);
rmSync(spec.outDir, { recursive: true, force: true });
mkdirSync(spec.outDir, { recursive: true });
const WAIT = { timeout: 20000 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--disable-domain-reliability', '--no-pings',
  ],
});

const errors = [];
const shots = [];
const pages = {};
let step = 'start';
const shot = async (page, name) => {
  const path = join(spec.outDir, `${name}.png`);
  await page.screenshot({ path });
  shots.push(path);
};

async function openUser(who) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await ctx.newPage();
  pages[who] = page;
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`${who} console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`${who} page error: ${e.message}`));
  await page.goto(spec.baseUrl);
  return page;
}

async function devCode(phone) {
  const r = await fetch(`${spec.adminUrl}/dev/codes/${encodeURIComponent(phone)}`);
  if (r.status !== 200) throw new Error(`no dev code for ${phone}: HTTP ${r.status}`);
  return (await r.text()).trim();
}

async function register(page, phone, who) {
  await page.getByLabel('Phone number').fill(phone);
  await page.getByRole('button', { name: 'Send code' }).click();
  await page.getByLabel('Code').waitFor(WAIT);
  if (who === 'alice') await shot(page, '01-login-code');
  await page.getByLabel('Code').fill(await devCode(phone));
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.locator('.status.online').waitFor(WAIT);
}

const bubble = (page, text) => page.locator('.bubble', { hasText: text });

let result = { ok: false };
try {
  const [alicePhone, bobPhone] = spec.phones;
  step = 'register';
  const alice = await openUser('alice');
  const bob = await openUser('bob');
  await register(alice, alicePhone, 'alice');
  await register(bob, bobPhone, 'bob');
  await shot(alice, '02-chat-list-empty');

  step = 'alice starts a chat and sends';
  await alice.getByRole('button', { name: 'New chat' }).click();
  await alice.getByLabel('Phone number of the contact').fill(bobPhone);
  await alice.getByRole('button', { name: 'Start chat' }).click();
  await alice.getByTestId('chat-sub').filter({ hasText: 'online' }).waitFor(WAIT);
  await alice.getByLabel('Message').fill('hello bob, this is alice');
  await alice.getByRole('button', { name: 'Send' }).click();
  await bubble(alice, 'hello bob').locator('[data-tick="delivered"], [data-tick="read"]').waitFor(WAIT);

  step = 'bob receives';
  const item = bob.locator('.chat-item', { hasText: alicePhone });
  await item.locator('.unread', { hasText: '1' }).waitFor(WAIT);
  await shot(bob, '03-chat-list-unread');
  await item.click();
  await bubble(bob, 'hello bob, this is alice').waitFor(WAIT);
  await bubble(alice, 'hello bob').locator('[data-tick="read"]').waitFor(WAIT);

  step = 'typing';
  await bob.getByLabel('Message').pressSequentially('hi al', { delay: 30 });
  await alice.getByTestId('chat-sub').filter({ hasText: 'typing…' }).waitFor(WAIT);
  await shot(alice, '04-chat-typing');

  step = 'bob replies';
  await bob.getByLabel('Message').pressSequentially('ice! 🎉');
  await bob.getByLabel('Message').press('Enter');
  await bubble(alice, 'hi alice! 🎉').waitFor(WAIT);
  await bubble(bob, 'hi alice!').locator('[data-tick="read"]').waitFor(WAIT);
  await shot(bob, '05-chat-read-ticks');

  step = 'reload keeps session and history';
  await alice.reload();
  await alice.locator('.status.online').waitFor(WAIT);
  await alice.locator('.chat-item', { hasText: bobPhone }).click();
  await bubble(alice, 'hello bob').waitFor(WAIT);
  await bubble(alice, 'hi alice! 🎉').waitFor(WAIT);
  await bob.getByLabel('Message').fill('after your reload');
  await bob.getByLabel('Message').press('Enter');
  await bubble(alice, 'after your reload').waitFor(WAIT);

  step = 'phone-sized viewport';
  await alice.setViewportSize({ width: 390, height: 844 });
  await shot(alice, '06-phone-chat');
  await alice.getByRole('button', { name: 'Back to chats' }).click();
  await alice.locator('.chat-item', { hasText: bobPhone }).waitFor(WAIT);
  await shot(alice, '07-phone-chat-list');
  await alice.locator('.chat-item', { hasText: bobPhone }).click();

  step = 'logout';
  await bob.getByRole('button', { name: 'Log out' }).click();
  await bob.getByLabel('Phone number').waitFor(WAIT);
  await alice.getByTestId('chat-sub').filter({ hasText: 'last seen' }).waitFor(WAIT);
  await bob.reload();
  await bob.getByLabel('Phone number').waitFor(WAIT);
  await shot(alice, '08-last-seen');

  if (errors.length) throw new Error(`console or page errors:\n${errors.join('\n')}`);
  result = { ok: true, screenshots: shots, outDir: spec.outDir };
} catch (e) {
  for (const [who, p] of Object.entries(pages)) await shot(p, `failed-${who}`).catch(() => {});
  result = { ok: false, step, error: String(e && e.message || e), errors, screenshots: shots };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
