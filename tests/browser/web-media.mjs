// Attachments in the web client: alice sends an image, a video and a
// document (sealed in the page, uploaded with tus through the main
// listener); bob sees the thumbnails before downloading, opens the image in
// the viewer, plays the video and seeks it, and downloads the document with
// its name; alice records a voice note (MediaRecorder, fake microphone), bob
// sees its waveform and plays it. Prints one JSON line.
//
// usage: node web-media.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phones": [a, b], "outDir",
//                "image": path, "video": path, "document": path, "seekTo": seconds}
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Run, WAIT, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);

await run.finish(async (state) => {
  const [alicePhone, bobPhone] = spec.phones;
  state.step = 'register';
  const alice = await run.open('alice');
  const bob = await run.open('bob');
  await run.register(alice, alicePhone);
  await run.register(bob, bobPhone);
  await run.startChat(alice, bobPhone);

  state.step = 'alice sends the files';
  for (const f of [spec.image, spec.video, spec.document]) {
    await alice.getByLabel('Attach file').setInputFiles(f);
    const name = basename(f);
    const sent = alice.locator('.bubble.mine', { has: alice.locator(`[aria-label$="${name}"]`) });
    await sent.locator('[data-tick="sent"], [data-tick="delivered"], [data-tick="read"]').waitFor(WAIT);
  }
  await run.shot(alice, 'media-01-sent');

  state.step = 'bob sees thumbnails before downloading';
  await bob.locator('.chat-item', { hasText: alicePhone }).click();
  const imgName = basename(spec.image);
  const vidName = basename(spec.video);
  const thumb = bob.getByAltText(`Thumbnail of ${imgName}`);
  await thumb.waitFor(WAIT);
  await bob.getByAltText(`Thumbnail of ${vidName}`).waitFor(WAIT);
  const thumbWidth = await thumb.evaluate((img) => img.naturalWidth);
  if (!(thumbWidth > 0)) throw new Error('the image thumbnail did not decode');
  await run.shot(bob, 'media-02-thumbnails');

  state.step = 'image viewer';
  await bob.getByRole('button', { name: `Open image ${imgName}` }).click();
  const full = bob.getByRole('dialog', { name: `Image ${imgName}` }).locator('img');
  await full.waitFor(WAIT);
  await bob.waitForFunction((n) => {
    const img = document.querySelector(`.viewer img[alt="${n}"]`);
    return img && img.complete && img.naturalWidth > 0;
  }, imgName, WAIT);
  const imageWidth = await full.evaluate((img) => img.naturalWidth);
  await run.shot(bob, 'media-03-viewer');
  await bob.getByRole('button', { name: 'Close' }).click();

  state.step = 'video plays and seeks';
  await bob.getByRole('button', { name: `Open video ${vidName}` }).click();
  const video = bob.getByLabel(`Video ${vidName}`);
  await video.waitFor(WAIT);
  const seek = await video.evaluate(async (v, to) => {
    if (v.readyState < 1) await new Promise((r) => v.addEventListener('loadedmetadata', r, { once: true }));
    const duration = v.duration;
    await new Promise((r) => { v.addEventListener('seeked', r, { once: true }); v.currentTime = to; });
    if (v.readyState < 2) await new Promise((r) => v.addEventListener('loadeddata', r, { once: true }));
    await v.play();
    const from = v.currentTime;
    await new Promise((r) => {
      const tick = () => (v.currentTime > from + 0.3 ? r() : v.requestVideoFrameCallback(tick));
      v.requestVideoFrameCallback(tick);
    });
    v.pause();
    return { duration, at: from, playedTo: v.currentTime, width: v.videoWidth };
  }, spec.seekTo);
  if (!(seek.at >= spec.seekTo - 0.1)) throw new Error(`seek landed at ${seek.at}`);
  await run.shot(bob, 'media-04-video');

  state.step = 'document keeps its name';
  const docName = basename(spec.document);
  const [dl] = await Promise.all([
    bob.waitForEvent('download', WAIT),
    bob.getByRole('button', { name: `Download ${docName}` }).click(),
  ]);
  const path = await dl.path();
  const same = readFileSync(path).equals(readFileSync(spec.document));
  if (dl.suggestedFilename() !== docName || !same) {
    throw new Error(`download ${dl.suggestedFilename()} (same bytes: ${same})`);
  }

  state.step = 'voice note';
  await alice.getByRole('button', { name: 'Record voice note' }).click();
  await alice.getByTestId('rec-time').filter({ hasText: '0:02' }).waitFor(WAIT);
  await alice.getByRole('button', { name: 'Stop and send voice note' }).click();
  const wave = bob.getByRole('img', { name: /^Voice note, \d+ seconds$/ });
  await wave.waitFor(WAIT);
  const levels = await wave.locator('rect').evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('height'))));
  await bob.getByRole('button', { name: 'Play voice note' }).click();
  await bob.waitForFunction(() => Number(document.querySelector('.voice')?.dataset.at) > 0.5, null, WAIT);
  await run.shot(bob, 'media-05-voice-note');
  const voice = { bars: levels.length, distinctHeights: new Set(levels).size };

  return { thumbWidth, imageWidth, seek, document: dl.suggestedFilename(), voice };
});
