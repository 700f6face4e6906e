// The web client (libolm) and the Rust SDK (vodozemac) in one chat: the
// browser user registers, starts a chat with the Rust user and sends; the
// Rust test decrypts it and answers; the browser must show the answer.
//
// usage: node web-interop.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phone" (the browser user), "peerPhone" (the Rust user),
//                "send": "text the browser sends", "expect": "text the Rust side answers", "outDir"}
import { Run, WAIT, bubble, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);

await run.finish(async (state) => {
  state.step = 'register';
  const page = await run.open('web');
  await run.register(page, spec.phone);
  state.step = 'send to the Rust user';
  await run.startChat(page, spec.peerPhone);
  await page.getByLabel('Message', { exact: true }).fill(spec.send);
  await page.getByRole('button', { name: 'Send' }).click();
  await bubble(page, spec.send).locator('[data-tick="delivered"], [data-tick="read"]').waitFor(WAIT);
  state.step = 'receive the Rust answer';
  await bubble(page, spec.expect).waitFor(WAIT);
  await run.shot(page, 'interop');
  return {};
});
