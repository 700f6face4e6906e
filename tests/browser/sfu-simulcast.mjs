// A Chromium page publishes simulcast video (q: 320x240, f: 640x480)
// through Palaver's SFU to a second page. The SFU starts the subscriber on
// the first layer and moves it up once its bandwidth estimate allows; the
// switch must keep the video decoding (at least `minFps` over the window
// after it, whatever layer changes the estimate causes meanwhile).
// Prints one JSON line; exits 0 when every check passed.
//
// usage: node sfu-simulcast.mjs SPEC_JSON
//   SPEC_JSON = {"joinUrl", "tokens": [2 join tokens], "minFps": 15, "seconds": 3}
import { sfuHarness, sleep } from './sfu-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const h = await sfuHarness(spec);
const { errors } = h;
const open = (i, simulcast) => h.open(i, simulcast);

let result = { ok: false };
try {
  const pub = await open(0, true);
  const sub = await open(1, false);
  const widths = [];
  let switched = null;
  const deadline = Date.now() + 40000;
  while (Date.now() < deadline) {
    const s = await sub.evaluate(() => window.stats());
    const v = Object.values(s.streams).find((x) => x.frames > 0);
    if (v && v.width > 0 && widths[widths.length - 1] !== v.width) widths.push(v.width);
    if (v && v.width >= 640) { switched = s; break; }
    await sleep(100);
  }
  if (!switched) throw new Error(`never switched up: widths ${JSON.stringify(widths)}`);
  const before = await sub.evaluate(() => window.stats());
  await sleep((spec.seconds ?? 3) * 1000);
  const after = await sub.evaluate(() => window.stats());
  const id = Object.keys(after.streams)[0];
  const fps = (after.streams[id].frames - before.streams[id].frames) / ((after.now - before.now) / 1000);
  const events = await sub.evaluate(() => window.events());
  const layers = events.filter((e) => e.type === 'layer').map((e) => e.rid);
  result = {
    ok: widths[0] < 640 && fps >= (spec.minFps ?? 15) && layers.includes('f') && errors.length === 0,
    widths, fps, width: after.streams[id].width, layers, errors,
  };
  await pub.evaluate(() => window.leave());
} catch (e) {
  result = { ok: false, error: String(e && e.stack || e), errors };
} finally {
  await h.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
