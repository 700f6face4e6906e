// Helpers shared by the web client drivers (web-*.mjs): Chromium, pages
// that record console and page errors, registration through the UI with the
// dev verifier's code, screenshots.
import { chromium } from 'playwright-core';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const WAIT = { timeout: 20000 };

export async function launch() {
  return chromium.launch(OPTIONS);
}

/**
 * One browser context with a profile on disk in `dir`: not an incognito
 * one, which Chromium needs for the Push API (it logs an error otherwise).
 * `Run` takes it in place of a browser.
 */
export async function launchPersistent(dir, viewport = { width: 1100, height: 720 }) {
  rmSync(dir, { recursive: true, force: true });
  return chromium.launchPersistentContext(dir, { ...OPTIONS, viewport });
}

const OPTIONS = {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-default-apps', '--disable-domain-reliability', '--no-pings',
      // Fake camera and microphone (voice notes, calls), WebRTC on loopback.
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
    ],
};

/** Pages, their errors and screenshots of one run. */
export class Run {
  constructor(browser, spec) {
    this.browser = browser;
    this.spec = spec;
    this.errors = [];
    this.shots = [];
    this.pages = {};
    rmSync(spec.outDir, { recursive: true, force: true });
    mkdirSync(spec.outDir, { recursive: true });
  }

  async open(who, viewport = { width: 1100, height: 720 }) {
    // A persistent context (launchPersistent) is its own only context.
    const ctx = this.browser.newContext ? await this.browser.newContext({ viewport }) : this.browser;
    const page = await ctx.newPage();
    this.pages[who] = page;
    page.on('console', (m) => { if (m.type() === 'error') this.errors.push(`${who} console: ${m.text()}`); });
    page.on('pageerror', (e) => this.errors.push(`${who} page error: ${e.message}`));
    await page.goto(this.spec.baseUrl);
    await this.started(page, who);
    return page;
  }

  /**
   * Waits until the app leaves its "Loading…" splash. Under heavy load a
   * fresh page was seen (about 1 run in 15 of the full suite) to stay on
   * it: its first IndexedDB open never completed. A user would reload; so
   * does the test, once, and says so on stderr (docs/web.md, "Not done").
   */
  async started(page, who) {
    for (let attempt = 0; ; attempt++) {
      try {
        await page.locator('.splash').waitFor({ state: 'detached', timeout: 15000 });
        return;
      } catch (e) {
        if (attempt >= 1) throw e;
        process.stderr.write(`${who}: the page stayed on Loading… for 15 s; reloading it once\n`);
        await page.reload();
      }
    }
  }

  async shot(page, name) {
    const path = join(this.spec.outDir, `${name}.png`);
    await page.screenshot({ path });
    this.shots.push(path);
  }

  async devCode(phone) {
    const r = await fetch(`${this.spec.adminUrl}/dev/codes/${encodeURIComponent(phone)}`);
    if (r.status !== 200) throw new Error(`no dev code for ${phone}: HTTP ${r.status}`);
    return (await r.text()).trim();
  }

  async register(page, phone, shotName) {
    await page.getByLabel('Phone number').fill(phone);
    await page.getByRole('button', { name: 'Send code' }).click();
    await page.getByLabel('Code').waitFor(WAIT);
    if (shotName) await this.shot(page, shotName);
    await page.getByLabel('Code').fill(await this.devCode(phone));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.locator('.status.online').waitFor(WAIT);
  }

  async startChat(page, phone) {
    await page.getByRole('button', { name: 'New chat' }).click();
    await page.getByLabel('Phone number of the contact').fill(phone);
    await page.getByRole('button', { name: 'Start chat' }).click();
  }

  /** Runs `body`, prints one JSON line and exits (1 on failure or any console error). */
  async finish(body) {
    let result;
    const state = { step: 'start' };
    try {
      const extra = await body(state);
      if (this.errors.length) throw new Error(`console or page errors:\n${this.errors.join('\n')}`);
      result = { ok: true, screenshots: this.shots, outDir: this.spec.outDir, ...extra };
    } catch (e) {
      for (const [who, p] of Object.entries(this.pages)) await this.shot(p, `failed-${who}`).catch(() => {});
      result = { ok: false, step: state.step, error: String((e && e.message) || e), errors: this.errors, screenshots: this.shots };
    } finally {
      await this.browser.close();
    }
    console.log(JSON.stringify(result));
    process.exit(result.ok ? 0 : 1);
  }
}

export const bubble = (page, text) => page.locator('.bubble', { hasText: text });
