// Drives Palaver's web client (web/, served by `palaver serve` at `/`) in two
// headless Chromium contexts: two users register with the dev verifier's
// codes, chat both ways end-to-end encrypted, see typing, presence and
// read ticks, reload (history and session survive), search the local
// history, reply, react, edit, delete for everyone and for me, set the
// disappearing-message timer, pin and archive, post and view a status,
// and log out. Writes a
// screenshot of each main screen to outDir and prints one JSON line.
// Any console error or page error fails the run.
//
// usage: node web-chat.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl": "http://127.0.0.1:PORT", "adminUrl": "http://127.0.0.1:PORT",
//                "phones": ["+49...", "+49..."], "outDir": "/path/for/screenshots"}
import { Run, WAIT, bubble, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);

await run.finish(async (state) => {
  const [alicePhone, bobPhone] = spec.phones;
  state.step = 'register';
  const alice = await run.open('alice');
  const bob = await run.open('bob');
  await run.register(alice, alicePhone, '01-login-code');
  await run.register(bob, bobPhone);
  await run.shot(alice, '02-chat-list-empty');

  state.step = 'alice starts a chat and sends';
  await run.startChat(alice, bobPhone);
  await alice.getByTestId('chat-sub').filter({ hasText: 'online' }).waitFor(WAIT);
  await alice.getByLabel('Message', { exact: true }).fill('hello bob, this is alice');
  await alice.getByRole('button', { name: 'Send' }).click();
  await bubble(alice, 'hello bob').locator('[data-tick="delivered"], [data-tick="read"]').waitFor(WAIT);

  state.step = 'bob receives';
  const item = bob.locator('.chat-item', { hasText: alicePhone });
  await item.locator('.unread', { hasText: '1' }).waitFor(WAIT);
  await run.shot(bob, '03-chat-list-unread');
  await item.click();
  await bubble(bob, 'hello bob, this is alice').waitFor(WAIT);
  await bubble(alice, 'hello bob').locator('[data-tick="read"]').waitFor(WAIT);

  state.step = 'typing';
  await bob.getByLabel('Message', { exact: true }).pressSequentially('hi al', { delay: 30 });
  await alice.getByTestId('chat-sub').filter({ hasText: 'typing…' }).waitFor(WAIT);
  await run.shot(alice, '04-chat-typing');

  state.step = 'bob replies';
  await bob.getByLabel('Message', { exact: true }).pressSequentially('ice! 🎉');
  await bob.getByLabel('Message', { exact: true }).press('Enter');
  await bubble(alice, 'hi alice! 🎉').waitFor(WAIT);
  await bubble(bob, 'hi alice!').locator('[data-tick="read"]').waitFor(WAIT);
  await run.shot(bob, '05-chat-read-ticks');

  state.step = 'reload keeps session and history';
  await alice.reload();
  await alice.locator('.status.online').waitFor(WAIT);
  await alice.locator('.chat-item', { hasText: bobPhone }).click();
  await bubble(alice, 'hello bob').waitFor(WAIT);
  await bubble(alice, 'hi alice! 🎉').waitFor(WAIT);
  await bob.getByLabel('Message', { exact: true }).fill('after your reload');
  await bob.getByLabel('Message', { exact: true }).press('Enter');
  await bubble(alice, 'after your reload').waitFor(WAIT);

  state.step = 'reply';
  const act = async (page, text, action) => {
    const b = bubble(page, text);
    await b.getByRole('button', { name: 'Message actions' }).click();
    await b.getByRole('button', { name: action, exact: true }).click();
  };
  await act(alice, 'after your reload', 'Reply');
  await alice.getByLabel('Message', { exact: true }).fill('replying here');
  await alice.getByLabel('Message', { exact: true }).press('Enter');
  await bubble(bob, 'replying here').locator('.quote', { hasText: 'after your reload' }).waitFor(WAIT);

  state.step = 'react';
  await act(bob, 'replying here', 'React 👍');
  await bubble(alice, 'replying here').getByLabel('Reactions').filter({ hasText: '👍' }).waitFor(WAIT);

  state.step = 'edit';
  await act(alice, 'replying here', 'Edit');
  await alice.getByLabel('Message', { exact: true }).fill('replying, edited');
  await alice.getByLabel('Message', { exact: true }).press('Enter');
  await bubble(bob, 'replying, edited').locator('.edited').waitFor(WAIT);

  state.step = 'delete for everyone and for me';
  await act(alice, 'hello bob, this is alice', 'Delete for everyone');
  await bob.locator('.bubble.deleted', { hasText: 'This message was deleted' }).waitFor(WAIT);
  await bubble(bob, 'hello bob, this is alice').waitFor({ state: 'detached', ...WAIT });
  await act(bob, 'hi alice!', 'Delete for me');
  await bubble(bob, 'hi alice!').waitFor({ state: 'detached', ...WAIT });
  await bubble(alice, 'hi alice!').waitFor(WAIT);
  await run.shot(bob, '06-reply-react-edit-delete');

  state.step = 'disappearing messages';
  await alice.getByLabel('Disappearing messages').selectOption({ label: '24 hours' });
  await bob.getByTestId('chat-timer').filter({ hasText: 'Disappearing messages: 24 hours' }).waitFor(WAIT);
  await alice.getByTestId('chat-timer').filter({ hasText: '24 hours' }).waitFor(WAIT);
  await bob.getByLabel('Disappearing messages').selectOption({ label: 'Off' });
  await alice.getByTestId('chat-timer').waitFor({ state: 'detached', ...WAIT });

  state.step = 'search local history';
  await alice.getByLabel('Search messages').fill('YOUR RELOAD');
  await alice.getByRole('list', { name: 'Search results' }).getByText('after your reload').waitFor(WAIT);
  await run.shot(alice, '06-search-results');
  await alice.getByLabel('Search messages').fill('no such words anywhere');
  await alice.getByText('No messages found.').waitFor(WAIT);
  await alice.getByLabel('Search messages').fill('');

  state.step = 'pin and archive';
  const aliceItem = alice.locator('.chat-item', { hasText: bobPhone });
  await alice.getByRole('button', { name: 'Pin', exact: true }).click();
  await aliceItem.getByLabel('pinned').waitFor(WAIT);
  await alice.getByRole('button', { name: 'Archive', exact: true }).click();
  await aliceItem.waitFor({ state: 'detached', ...WAIT });
  await alice.getByRole('button', { name: 'Archived (1)' }).click();
  await aliceItem.click();
  await alice.getByRole('button', { name: 'Unarchive' }).click();
  await alice.getByRole('button', { name: 'Chats', exact: true }).click();
  await aliceItem.waitFor(WAIT);

  state.step = 'status post and viewer';
  await alice.getByRole('button', { name: 'Status', exact: true }).click();
  await alice.getByLabel('My status', { exact: true }).fill('at the beach');
  await alice.getByRole('button', { name: 'Post status' }).click();
  await bob.getByRole('button', { name: 'Status', exact: true }).click();
  await bob.getByRole('button', { name: `Status of ${alicePhone}` }).click();
  await bob.getByRole('dialog', { name: `Status of ${alicePhone}` }).getByText('at the beach').waitFor(WAIT);
  await run.shot(bob, '07-status-viewer');
  await bob.getByRole('button', { name: 'Close' }).click();
  await alice.getByRole('list', { name: 'My statuses' }).getByText('Seen by 1').waitFor(WAIT);
  for (const p of [alice, bob]) await p.getByRole('button', { name: 'Chats', exact: true }).click();

  state.step = 'phone-sized viewport';
  await alice.setViewportSize({ width: 390, height: 844 });
  const fits = () => alice.evaluate(() => [...document.querySelectorAll('button, input, select')]
    .filter((e) => e.offsetParent !== null)
    .every((e) => { const r = e.getBoundingClientRect(); return r.left >= 0 && r.right <= window.innerWidth + 0.5; }));
  if (!(await fits())) throw new Error('controls overflow a 390 px wide screen');
  await run.shot(alice, '08-phone-chat');
  await alice.getByRole('button', { name: 'Back to chats' }).click();
  await alice.locator('.chat-item', { hasText: bobPhone }).waitFor(WAIT);
  if (!(await fits())) throw new Error('the chat list overflows a 390 px wide screen');
  await run.shot(alice, '09-phone-chat-list');
  await alice.locator('.chat-item', { hasText: bobPhone }).click();

  state.step = 'logout';
  await bob.getByRole('button', { name: 'Log out' }).click();
  await bob.getByLabel('Phone number').waitFor(WAIT);
  await alice.getByTestId('chat-sub').filter({ hasText: 'last seen' }).waitFor(WAIT);
  await bob.reload();
  await bob.getByLabel('Phone number').waitFor(WAIT);
  await run.shot(alice, '10-last-seen');
  return {};
});
