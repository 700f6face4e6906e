// Dynacast with two Chromium pages: a publisher sending simulcast video
// (q: 320x240, f: 640x480) and a subscriber. When the subscriber asks for
// `low`, the SFU must tell the publisher to stop encoding f, and the
// publisher's f layer must stop sending while the subscriber keeps
// decoding q; asking for `high` must resume f and bring the subscriber
// back up to 640 px.
// Prints one JSON line; exits 0 when every check passed.
//
// usage: node sfu-dynacast.mjs SPEC_JSON
//   SPEC_JSON = {"joinUrl", "tokens": [2 join tokens]}
import { sfuHarness, until } from './sfu-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const h = await sfuHarness(spec);
const { errors } = h;
const open = (i, simulcast) => h.open(i, simulcast);

const lastLayers = (events) => {
  const m = events.filter((e) => e.type === 'publish_layers').pop();
  return m ? m.active : null;
};

let result = { ok: false };
const steps = {};
try {
  const pub = await open(0, true);
  const sub = await open(1, false);
  const t0 = Date.now();
  const stream = await until('first frame at the subscriber', 30000, async () => {
    const s = await sub.evaluate(() => window.stats());
    return Object.entries(s.streams).find(([, v]) => v.frames > 0)?.[0];
  });
  const width = async () => (await sub.evaluate(() => window.stats())).streams[stream].width;
  steps.firstFrameMs = Date.now() - t0;

  // Low: f is paused at the publisher, the subscriber decodes q.
  await sub.evaluate((s) => window.setQuality(s, 'low'), stream);
  const t1 = Date.now();
  steps.pausedLayers = await until('publish_layers without f', 30000, async () => {
    const l = lastLayers(await pub.evaluate(() => window.events()));
    return l && !l.includes('f') ? l : null;
  });
  steps.pauseMs = Date.now() - t1;
  const pausedStats = await until('f inactive at the publisher', 10000, async () => {
    const s = await pub.evaluate(() => window.sendStats());
    return s.f && s.f.active === false ? s : null;
  });
  // Its byte counter stands still (a frame already queued may go out)
  // while q sends another 20 kB.
  const later = await until('q still sent while f is paused', 20000, async () => {
    const s = await pub.evaluate(() => window.sendStats());
    return s.q.bytes > pausedStats.q.bytes + 20000 ? s : null;
  });
  steps.fBytesWhilePaused = later.f.bytes - pausedStats.f.bytes;
  if (steps.fBytesWhilePaused > 8000) throw new Error(`f kept sending: ${steps.fBytesWhilePaused} bytes`);
  await until('subscriber on q (320 px)', 20000, async () => (await width()) === 320);

  // High: f resumes and the subscriber goes back up.
  await sub.evaluate((s) => window.setQuality(s, 'high'), stream);
  const t2 = Date.now();
  steps.resumedLayers = await until('publish_layers with f', 30000, async () => {
    const l = lastLayers(await pub.evaluate(() => window.events()));
    return l && l.includes('f') ? l : null;
  });
  await until('f sent again', 20000, async () => {
    const s = await pub.evaluate(() => window.sendStats());
    return s.f.active && s.f.bytes > later.f.bytes + 20000;
  });
  await until('subscriber back on f (640 px)', 40000, async () => (await width()) === 640);
  steps.upMs = Date.now() - t2;
  const events = await pub.evaluate(() => window.events());
  const clientErrors = events.filter((e) => e.type === 'client_error');
  result = { ok: errors.length === 0 && clientErrors.length === 0, steps, errors, clientErrors };
  await pub.evaluate(() => window.leave());
} catch (e) {
  result = { ok: false, error: String(e && e.stack || e), steps, errors };
} finally {
  await h.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
