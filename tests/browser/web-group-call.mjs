// A three-person group call in the web client through the embedded SFU:
// alice picks bob and carol and starts; both are rung and join; every page
// shows the two others in its grid and decodes their video; one tile is
// highlighted as the active speaker; all leave. Prints one JSON line.
//
// usage: node web-group-call.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phones": [alice, bob, carol], "outDir"}
import { Run, WAIT, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);

/** Per remote tile of the grid: its video size once frames are decoded. */
async function grid(page, expect) {
  await page.waitForFunction((n) => {
    const vs = [...document.querySelectorAll('.tile[data-stream] video')];
    return vs.length === n && vs.every((v) => v.videoWidth > 0);
  }, expect, WAIT);
  return page.locator('.tile[data-stream] video').evaluateAll((vs) => vs.map((v) => v.videoWidth));
}

await run.finish(async (state) => {
  const [alicePhone, bobPhone, carolPhone] = spec.phones;
  state.step = 'register';
  const alice = await run.open('alice');
  // Records what alice's page says to the SFU on its data channel.
  await alice.addInitScript(() => {
    window.sentToSfu = [];
    const send = RTCDataChannel.prototype.send;
    RTCDataChannel.prototype.send = function (data) {
      try { window.sentToSfu.push(JSON.parse(data)); } catch { /* not JSON */ }
      return send.call(this, data);
    };
  });
  await alice.reload();
  await run.started(alice, 'alice');
  const bob = await run.open('bob');
  const carol = await run.open('carol');
  await run.register(alice, alicePhone);
  await run.register(bob, bobPhone);
  await run.register(carol, carolPhone);
  await run.startChat(alice, bobPhone);
  await run.startChat(alice, carolPhone);

  state.step = 'start';
  await alice.getByRole('button', { name: 'Group call' }).click();
  await alice.getByRole('checkbox', { name: bobPhone }).check();
  await alice.getByRole('checkbox', { name: carolPhone }).check();
  await alice.getByRole('button', { name: 'Start video call' }).click();
  await alice.getByRole('dialog', { name: 'Group call' }).waitFor(WAIT);

  state.step = 'ring and join';
  for (const p of [bob, carol]) {
    await p.getByRole('dialog', { name: 'Incoming group call' }).waitFor(WAIT);
    await p.getByRole('button', { name: 'Join' }).click();
  }
  state.step = 'grids decode';
  const widths = {};
  for (const [who, p] of [['alice', alice], ['bob', bob], ['carol', carol]]) widths[who] = await grid(p, 2);

  state.step = 'active speaker';
  await alice.locator('.tile.speaking').first().waitFor(WAIT);
  await run.shot(alice, 'group-call-grid');

  state.step = 'speaker view';
  await alice.getByRole('button', { name: 'Speaker view' }).click();
  const main = alice.locator('.grid.speaker .tile.main');
  await main.waitFor(WAIT);
  const strip = alice.locator('.grid.speaker .tile:not(.main)').first();
  // The large tile follows the active speaker, so it may move while
  // this looks: wait for a layout where it is more than twice as wide.
  await alice.waitForFunction(() => {
    const m = document.querySelector('.grid.speaker .tile.main');
    const s = document.querySelector('.grid.speaker .tile:not(.main)[data-stream]');
    return m && s && m.getBoundingClientRect().width > 2 * s.getBoundingClientRect().width;
  }, null, WAIT);
  // Simulcast: the large tile asked the SFU for full size, the strip tile
  // for the small layer (video_quality), and the strip decodes the small
  // layer (320 px of 640).
  state.step = 'strip on the small layer';
  // The large tile follows the active speaker: check a moment where the
  // page's last requests match the current layout.
  await alice.waitForFunction(() => {
    const last = (id) => window.sentToSfu.filter((m) => m.type === 'video_quality' && m.stream === id).pop()?.quality;
    const m = document.querySelector('.grid.speaker .tile.main');
    const s = document.querySelector('.grid.speaker .tile:not(.main)[data-stream]');
    if (!m || !s) return false;
    const v = s.querySelector('video');
    return last(m.dataset.stream) === 'high' && last(s.dataset.stream) === 'low' && v.videoWidth === 320;
  }, null, { timeout: 30000 });
  const mainWidth = await main.locator('video').evaluate((v) => v.videoWidth);
  await run.shot(alice, 'group-call-speaker-view');
  await alice.getByRole('button', { name: 'Grid view' }).click();
  await alice.locator('.grid.speaker').waitFor({ state: 'detached', ...WAIT });

  state.step = 'leave';
  await carol.getByRole('button', { name: 'Leave' }).click();
  await alice.waitForFunction(() => document.querySelectorAll('.tile[data-stream]').length === 1, null, WAIT);
  for (const p of [alice, bob]) await p.getByRole('button', { name: 'Leave' }).click();
  return { widths, mainWidth };
});
