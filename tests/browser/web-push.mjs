// Web Push in the web client: alice enables notifications in the settings
// (the page registers its service worker; the push subscription itself
// fails gracefully, headless Chromium has no push service and this server
// no push frames), then pushes are delivered to the service worker through
// the DevTools protocol and the notifications it shows are checked: counts
// and callers' names only, never message text; call_cancel closes the call's.
//
// usage: node web-push.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phone" (alice), "bobPhone", "bobAccount" (a user
//                the Rust test registered), "outDir"}
import { Run, WAIT, bubble, launchPersistent } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
// Not incognito: Chromium refuses the Push API there, with a console error.
const run = new Run(await launchPersistent(`${spec.outDir}-profile`), spec);
const SECRET = 'the secret plan for saturday';

/** The notifications the service worker shows now: [{title, body, tag, requireInteraction}]. */
const shown = (page, tag) => page.evaluate(async (t) => {
  const reg = await navigator.serviceWorker.ready;
  const list = await reg.getNotifications(t ? { tag: t } : {});
  return list.map((n) => ({ title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction }));
}, tag);

/** Waits until the worker shows `n` notifications with `tag` (the push handler runs there). */
async function until(page, tag, n, what) {
  try {
    await page.waitForFunction(async ({ t, n }) => {
      const reg = await navigator.serviceWorker.ready;
      return (await reg.getNotifications({ tag: t })).length === n;
    }, { t: tag, n }, { timeout: WAIT.timeout, polling: 100 });
  } catch {
    throw new Error(`${what}: notifications are ${JSON.stringify(await shown(page))}`);
  }
  return shown(page, tag);
}

await run.finish(async (state) => {
  const { bobPhone, bobAccount } = spec;
  state.step = 'register';
  const alice = await run.open('alice');
  await run.register(alice, spec.phone);
  await alice.context().grantPermissions(['notifications'], { origin: spec.baseUrl });

  state.step = 'a chat gives alice a name for bob';
  await run.startChat(alice, bobPhone);
  await alice.getByLabel('Message', { exact: true }).fill(SECRET);
  await alice.getByRole('button', { name: 'Send' }).click();
  await bubble(alice, SECRET).locator('[data-tick="sent"], [data-tick="delivered"]').waitFor(WAIT);

  state.step = 'enable notifications';
  const cdp = await alice.context().newCDPSession(alice);
  const registrations = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (ev) => registrations.push(...ev.registrations));
  await cdp.send('ServiceWorker.enable');
  await alice.getByRole('button', { name: 'Settings' }).click();
  await alice.getByLabel('Notifications').check();
  await alice.getByTestId('push-note').filter({ hasText: 'Push is unavailable' }).waitFor({ timeout: 40000 });
  const scope = await alice.evaluate(async () => (await navigator.serviceWorker.ready).scope);
  if (scope !== `${spec.baseUrl}/`) throw new Error(`service worker scope ${scope}`);
  await run.shot(alice, '01-settings-push-unavailable');
  await alice.getByRole('button', { name: 'Quiet for 8 hours' }).click();
  await alice.getByText('Quiet until').waitFor(WAIT);
  const reg = registrations.find((r) => r.scopeURL === `${spec.baseUrl}/` && !r.isDeleted);
  if (!reg) throw new Error(`no service worker registration seen: ${JSON.stringify(registrations)}`);
  const deliver = (data) => cdp.send('ServiceWorker.deliverPushMessage', {
    origin: spec.baseUrl, registrationId: reg.registrationId, data: JSON.stringify(data),
  });

  state.step = 'a message push shows a count, no content';
  await deliver({ kind: 'message', count: 3 });
  const [m] = await until(alice, 'palaver-messages', 1, 'message notification');
  if (m.title !== 'Palaver' || m.body !== '3 new messages') throw new Error(`message notification ${JSON.stringify(m)}`);

  state.step = 'a call push names the caller and stays until answered';
  await deliver({ kind: 'call', call: 'c0ffee', from: String(bobAccount), video: true });
  const [c] = await until(alice, 'call-c0ffee', 1, 'call notification');
  if (c.title !== 'Incoming call' || c.body !== `Video call from ${bobPhone}` || !c.requireInteraction) {
    throw new Error(`call notification ${JSON.stringify(c)}`);
  }
  const all = await shown(alice);
  for (const n of all) if (`${n.title} ${n.body}`.includes('secret')) throw new Error(`message text in a notification: ${JSON.stringify(n)}`);

  state.step = 'call_cancel closes the call notification only';
  await deliver({ kind: 'call_cancel', call: 'c0ffee' });
  await until(alice, 'call-c0ffee', 0, 'call notification after call_cancel');
  await until(alice, 'palaver-messages', 1, 'message notification after call_cancel');

  state.step = 'bad pushes are ignored';
  await cdp.send('ServiceWorker.deliverPushMessage', { origin: spec.baseUrl, registrationId: reg.registrationId, data: 'not json' });
  await deliver({ kind: 'call', call: 'c2', from: '999999', video: false });
  const [unknown] = await until(alice, 'call-c2', 1, 'call from an unknown account');
  if (unknown.body !== 'Voice call') throw new Error(`unknown caller shown as ${unknown.body}`);

  state.step = 'disable';
  await alice.getByLabel('Notifications').uncheck();
  return {};
});
