// ICE restart with two Chromium pages in a group call: page A restarts
// ICE (what a client does after a network change) through the SFU's
// restart endpoint. The SFU must answer with new ICE credentials and keep
// the session: ICE connects again, video keeps flowing both ways, and the
// data channel still carries messages.
// Prints one JSON line; exits 0 when every check passed.
//
// usage: node sfu-restart.mjs SPEC_JSON
//   SPEC_JSON = {"joinUrl", "tokens": [2 join tokens]}
import { sfuHarness, until } from './sfu-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const h = await sfuHarness(spec);
const { errors } = h;
const open = (i, simulcast) => h.open(i, simulcast);

let result = { ok: false };
const steps = {};
try {
  const a = await open(0, false);
  const b = await open(1, false);
  // Frames each page decoded of the other.
  const frames = async (p) => {
    const s = await p.evaluate(() => window.stats());
    return Object.values(s.streams).reduce((n, v) => n + v.frames, 0);
  };
  await until('video both ways', 30000, async () => (await frames(a)) > 0 && (await frames(b)) > 0);
  const atRestart = { a: await frames(a), b: await frames(b) };
  const t0 = Date.now();
  steps.ufrag = await a.evaluate(() => window.restartIce());
  if (steps.ufrag.before === steps.ufrag.after) throw new Error('the SFU kept its ICE credentials');
  await until('ICE connected again', 20000, async () => {
    const s = await a.evaluate(() => window.iceState());
    return s === 'connected' || s === 'completed';
  });
  steps.reconnectMs = Date.now() - t0;
  // Two more seconds of video (30 fps) each way after the restart.
  await until('video from A after the restart', 30000, async () => (await frames(b)) > atRestart.b + 60);
  await until('video to A after the restart', 30000, async () => (await frames(a)) > atRestart.a + 60);
  steps.videoBackMs = Date.now() - t0;
  // The data channel survived: A's mute reaches B.
  await a.evaluate(() => window.sendRaw({ type: 'mute', kind: 'audio', muted: true }));
  await until('B sees A muted', 10000, async () => (await b.evaluate(() => window.events()))
    .some((e) => e.type === 'muted' && e.muted === true));
  result = { ok: errors.length === 0, steps, errors };
  await a.evaluate(() => window.leave());
} catch (e) {
  result = { ok: false, error: String(e && e.stack || e), steps, errors };
} finally {
  await h.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
