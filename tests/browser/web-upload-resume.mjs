// An upload interrupted by a reload resumes: alice attaches a 3 MiB
// document; after a few tus chunks the next one is held (the server never
// sees it) and alice reloads the page. The page must continue the same tus
// upload from the server's offset (no new POST, first PATCH at offset > 0)
// and send the message; bob downloads the document, byte for byte.
//
// usage: node web-upload-resume.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phones": [alice, bob], "outDir"}
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Run, WAIT, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);
const NAME = 'big report.bin';
const DATA = randomBytes(3 * 1024 * 1024);
const UPLOADS = /\/v1\/uploads(\/|$)/;

await run.finish(async (state) => {
  const [alicePhone, bobPhone] = spec.phones;
  state.step = 'register';
  const alice = await run.open('alice');
  const bob = await run.open('bob');
  await run.register(alice, alicePhone);
  await run.register(bob, bobPhone);
  await run.startChat(alice, bobPhone);

  state.step = 'the upload stalls after three chunks';
  let patches = 0;
  let stalled;
  const stall = new Promise((resolve) => { stalled = resolve; });
  await alice.route(UPLOADS, (route) => {
    if (route.request().method() === 'PATCH' && ++patches > 3) return stalled(); // held: never answered
    return route.continue();
  });
  await alice.getByLabel('Attach file').setInputFiles({ name: NAME, mimeType: 'application/octet-stream', buffer: DATA });
  await stall;
  const progress = await alice.getByLabel(`Uploading ${NAME}`).evaluate((p) => p.value);
  if (!(progress > 0 && progress < 1)) throw new Error(`progress before the reload: ${progress}`);
  await run.shot(alice, '01-upload-stalled');

  state.step = 'reload resumes the same upload';
  await alice.unroute(UPLOADS);
  const after = [];
  alice.on('request', (r) => { if (UPLOADS.test(r.url())) after.push({ method: r.method(), offset: r.headers()['upload-offset'] }); });
  await alice.reload();
  await run.started(alice, 'alice');
  await alice.locator('.chat-item', { hasText: bobPhone }).click();
  const sent = alice.locator('.bubble.mine', { has: alice.locator(`[aria-label$="${NAME}"]`) });
  await sent.locator('[data-tick="sent"], [data-tick="delivered"], [data-tick="read"]').waitFor({ timeout: 60000 });
  if (after.some((r) => r.method === 'POST')) throw new Error(`a new upload was created: ${JSON.stringify(after)}`);
  const first = after.find((r) => r.method === 'PATCH');
  if (!first || !(Number(first.offset) > 0)) throw new Error(`the upload restarted: ${JSON.stringify(after)}`);

  state.step = 'bob downloads the same bytes';
  await bob.locator('.chat-item', { hasText: alicePhone }).click();
  const [dl] = await Promise.all([
    bob.waitForEvent('download', { timeout: 60000 }),
    bob.getByRole('button', { name: `Download ${NAME}` }).click(),
  ]);
  if (!readFileSync(await dl.path()).equals(DATA)) throw new Error('the downloaded document differs');
  await run.shot(bob, '02-received');
  return { resumedAt: Number(first.offset), requestsAfterReload: after.length };
});
