// A 1:1 video call in the web client: bob is logged in on two browsers and
// both ring; one accepts, the other stops ringing; both sides decode video
// frames; mute and camera off toggle; alice hangs up and both screens close;
// a second call alice cancels shows as missed in bob's call history.
// Prints one JSON line.
//
// usage: node web-call.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phones": [alice, bob], "outDir"}
import { Run, WAIT, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);

/** Frames the page's remote <video> presents within `ms`, and its size. */
async function decoded(page, ms = 1500) {
  const v = page.getByLabel('Remote video');
  await v.waitFor(WAIT);
  await page.waitForFunction(() => document.querySelector('video[aria-label="Remote video"]')?.videoWidth > 0, null, WAIT);
  return v.evaluate((el, ms) => new Promise((resolve) => {
    let frames = 0;
    const count = () => { frames++; el.requestVideoFrameCallback(count); };
    el.requestVideoFrameCallback(count);
    setTimeout(() => resolve({ frames, width: el.videoWidth, height: el.videoHeight }), ms);
  }), ms);
}

await run.finish(async (state) => {
  const [alicePhone, bobPhone] = spec.phones;
  state.step = 'register';
  const alice = await run.open('alice');
  const bob = await run.open('bob');
  const bob2 = await run.open('bob2');
  await run.register(alice, alicePhone);
  await run.register(bob, bobPhone);
  await run.register(bob2, bobPhone);
  await run.startChat(alice, bobPhone);

  state.step = 'ring on every device';
  await alice.getByRole('button', { name: 'Video call' }).click();
  await alice.getByText('Calling').waitFor(WAIT);
  for (const p of [bob, bob2]) await p.getByText('Incoming video call from').waitFor(WAIT);
  await run.shot(bob, 'call-01-incoming');

  state.step = 'accept';
  await bob.getByRole('button', { name: 'Accept' }).click();
  await bob2.getByRole('dialog').waitFor({ state: 'detached', ...WAIT });
  const [a, b] = [await decoded(alice), await decoded(bob)];
  if (!(a.frames > 3 && b.frames > 3)) throw new Error(`frames decoded: alice ${a.frames}, bob ${b.frames}`);
  await run.shot(alice, 'call-02-active');

  state.step = 'mute and camera off';
  await bob.getByRole('button', { name: 'Mute' }).click();
  await bob.getByRole('button', { name: 'Unmute' }).waitFor(WAIT);
  await bob.getByRole('button', { name: 'Camera off' }).click();
  await bob.getByRole('button', { name: 'Camera on' }).waitFor(WAIT);
  const tracks = await bob.evaluate(() => {
    const s = document.querySelector('video[aria-label="My camera"]').srcObject;
    return s.getTracks().map((t) => ({ kind: t.kind, enabled: t.enabled }));
  });
  if (tracks.some((t) => t.enabled)) throw new Error(`tracks still enabled: ${JSON.stringify(tracks)}`);
  await run.shot(bob, 'call-03-muted');

  state.step = 'hang up';
  await alice.getByRole('button', { name: 'Hang up' }).click();
  await bob.getByRole('dialog', { name: /^Call with/ }).waitFor({ state: 'detached', ...WAIT });
  await bob.getByText('Call ended: hung up').waitFor(WAIT);

  state.step = 'a cancelled call is a missed call';
  await alice.getByRole('button', { name: 'Video call' }).click();
  await bob.getByText('Incoming video call from').waitFor(WAIT);
  await alice.getByRole('button', { name: 'Hang up' }).click();
  await bob.getByText('Call ended: cancelled').waitFor(WAIT);
  await bob.getByRole('button', { name: 'Calls', exact: true }).click();
  const log = bob.getByRole('list', { name: 'Call history' });
  await log.locator('li.missed[data-reason="cancelled"]', { hasText: 'Missed video call' }).waitFor(WAIT);
  await log.locator('li[data-reason="hung_up"]', { hasText: 'Incoming video call' }).waitFor(WAIT);
  await run.shot(bob, 'call-04-history');
  return { alice: a, bob: b };
});
