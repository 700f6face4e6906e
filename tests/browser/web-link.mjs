// Linking a second browser to an existing account with a code: alice's
// first browser shows the code as a QR code and as text; the QR is read
// back from a screenshot (jsQR) and its link text pasted into a fresh
// browser, which joins alice's account as a new device (no SMS code). The
// linked browser then gets the copies of alice's own messages and sends to
// bob, end to end encrypted like any device.
//
// usage: node web-link.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phones": [alice, bob], "outDir"}
import jsQR from 'jsqr';
import { PNG } from 'pngjs';
import { Run, WAIT, bubble, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);

async function send(page, text) {
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

await run.finish(async (state) => {
  const [alicePhone, bobPhone] = spec.phones;
  state.step = 'register';
  const alice = await run.open('alice');
  const bob = await run.open('bob');
  await run.register(alice, alicePhone);
  await run.register(bob, bobPhone);

  state.step = 'alice shows a link code';
  await alice.getByRole('button', { name: 'Settings' }).click();
  await alice.getByRole('button', { name: 'Link a device' }).click();
  const text = (await alice.getByTestId('link-code').textContent()).trim();
  const qr = alice.getByRole('img', { name: 'Link code as a QR code' });
  const png = PNG.sync.read(await qr.screenshot());
  const decoded = jsQR(new Uint8ClampedArray(png.data), png.width, png.height);
  if (!decoded) throw new Error('the QR code does not decode');
  const link = decoded.data;
  const params = new URLSearchParams(link.replace(/^palaver:link\?/, ''));
  if (params.get('code') !== text || params.get('phone') !== alicePhone) throw new Error(`QR holds ${link}, text ${text}`);
  await run.shot(alice, '01-link-code');

  state.step = 'a new browser links with it';
  const second = await run.open('alice-2');
  await second.getByRole('button', { name: 'Link to an existing account' }).click();
  await second.getByLabel('Link code (or the link text)').fill(link);
  await second.getByRole('button', { name: 'Link this browser' }).click();
  await second.locator('.status.online').waitFor(WAIT);
  await second.locator('.sidebar header strong', { hasText: alicePhone }).waitFor(WAIT);

  state.step = 'the code is single-use';
  const third = await run.open('third');
  await third.getByRole('button', { name: 'Link to an existing account' }).click();
  await third.getByLabel('Link code (or the link text)').fill(link);
  await third.getByRole('button', { name: 'Link this browser' }).click();
  await third.getByRole('alert').filter({ hasText: 'code_invalid' }).waitFor(WAIT);

  state.step = 'the linked browser reads and sends';
  await run.startChat(alice, bobPhone);
  await send(alice, 'from the first browser');
  await second.locator('.chat-item', { hasText: 'from the first browser' }).click();
  await bubble(second, 'from the first browser').waitFor(WAIT);
  await send(second, 'from the linked browser');
  await bob.locator('.chat-item', { hasText: 'from the linked browser' }).click();
  await bubble(bob, 'from the linked browser').waitFor(WAIT);
  await bubble(bob, 'from the first browser').waitFor(WAIT);
  await run.shot(second, '02-linked-chat');
  return { link: link.replace(/code=[^&]+/, 'code=…') };
});
