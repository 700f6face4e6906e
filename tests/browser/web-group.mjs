// A group chat between three browser users (alice, bob, carol) and a Rust
// SDK user, Megolm end to end: alice creates the group, every member's
// message reaches every other member (the Rust user's too, which the Rust
// test sends once it decrypted alice's first one), alice promotes and
// demotes bob, removes carol (who then gets nothing more of the group),
// adds her back, and carol leaves; bob reloads (Megolm sessions survive)
// and his Olm pickle key is stored wrapped by a non-extractable WebCrypto
// key. Screenshots to outDir; prints one JSON
// line. Any console error or page error fails the run.
//
// usage: node web-group.mjs SPEC_JSON
//   SPEC_JSON = {"baseUrl", "adminUrl", "phones": [alice, bob, carol], "rustPhone",
//                "rustText": "what the Rust user sends", "outDir"}
import { Run, WAIT, bubble, launch } from './web-lib.mjs';

const spec = JSON.parse(process.argv[2]);
const run = new Run(await launch(), spec);
const GROUP = 'Weekend trip';

async function send(page, text) {
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

async function openGroup(page) {
  await page.locator('.chat-item', { hasText: GROUP }).click();
  await page.getByRole('main', { name: `Group ${GROUP}` }).waitFor(WAIT);
}

/** Waits until `page`'s members panel shows `phone` with `role` ('' for a member). */
async function memberRole(page, phone, role) {
  const row = page.locator('.group-members li', { hasText: phone });
  await row.and(page.locator(`[data-role="${role}"]`)).waitFor(WAIT);
}

await run.finish(async (state) => {
  const [alicePhone, bobPhone, carolPhone] = spec.phones;
  state.step = 'register';
  const alice = await run.open('alice');
  const bob = await run.open('bob');
  const carol = await run.open('carol');
  await run.register(alice, alicePhone);
  await run.register(bob, bobPhone);
  await run.register(carol, carolPhone);

  state.step = 'alice creates the group';
  await alice.getByRole('button', { name: 'New group' }).click();
  await alice.getByLabel('Group name').fill(GROUP);
  await alice.getByLabel("Members' phone numbers").fill([bobPhone, carolPhone, spec.rustPhone].join(', '));
  await alice.getByRole('button', { name: 'Create group' }).click();
  await alice.getByRole('main', { name: `Group ${GROUP}` }).waitFor(WAIT);
  await alice.getByTestId('chat-sub').filter({ hasText: '4 members' }).waitFor(WAIT);
  await run.shot(alice, '01-group-created');

  state.step = 'bob and carol see the group';
  for (const p of [bob, carol]) {
    await openGroup(p);
    await p.locator('.system', { hasText: 'created the group' }).waitFor(WAIT);
  }

  state.step = 'alice sends; everyone reads it';
  await send(alice, 'hello group from alice');
  await bubble(bob, 'hello group from alice').waitFor(WAIT);
  await bubble(carol, 'hello group from alice').waitFor(WAIT);
  // Delivered once every other member (the Rust user included) acknowledged it.
  await bubble(alice, 'hello group from alice').locator('[data-tick="delivered"], [data-tick="read"]').waitFor(WAIT);

  state.step = 'the Rust user answers';
  for (const p of [alice, bob, carol]) await bubble(p, spec.rustText).waitFor({ timeout: 60000 });

  state.step = 'bob and carol send';
  await send(bob, 'bob is in');
  await send(carol, 'carol too');
  for (const p of [alice, carol]) await bubble(p, 'bob is in').waitFor(WAIT);
  for (const p of [alice, bob]) await bubble(p, 'carol too').waitFor(WAIT);
  await bubble(bob, 'carol too').locator('.from', { hasText: carolPhone }).waitFor(WAIT);
  await run.shot(bob, '02-group-chat');

  state.step = 'a call from the group header rings the members';
  await alice.getByRole('button', { name: 'Group video call' }).click();
  await alice.getByRole('dialog', { name: 'Group call' }).waitFor(WAIT);
  for (const p of [bob, carol]) {
    await p.getByRole('dialog', { name: 'Incoming group call' }).waitFor(WAIT);
    await p.getByRole('button', { name: 'Decline' }).click();
  }
  await alice.getByRole('button', { name: 'Leave' }).click();
  await alice.getByRole('dialog', { name: 'Group call' }).waitFor({ state: 'detached', ...WAIT });


  await alice.getByRole('button', { name: 'Members' }).click();
  await alice.getByRole('button', { name: `Make ${bobPhone} admin` }).click();
  await bob.getByRole('button', { name: 'Members' }).click();
  await memberRole(bob, 'You', 'admin');
  await bob.getByRole('button', { name: `Remove ${carolPhone}` }).waitFor(WAIT);
  await run.shot(bob, '03-members-as-admin');
  await alice.getByRole('button', { name: `Dismiss ${bobPhone} as admin` }).click();
  await memberRole(bob, 'You', 'member');
  await bob.locator('.system', { hasText: 'dismissed you as admin' }).waitFor(WAIT);

  state.step = 'alice removes carol';
  await alice.getByRole('button', { name: `Remove ${carolPhone}` }).click();
  await alice.getByTestId('chat-sub').filter({ hasText: '3 members' }).waitFor(WAIT);
  await carol.getByTestId('chat-sub').filter({ hasText: 'You are no longer a member' }).waitFor(WAIT);
  await carol.locator('.composer.left').waitFor(WAIT);
  await run.shot(carol, '04-removed');

  state.step = 'a message after the removal reaches bob, not carol';
  await send(alice, 'after removal');
  await bubble(bob, 'after removal').waitFor(WAIT);
  // Then a 1:1 message to carol: her queue is in order, so once it is
  // shown anything of the group stored before it would have been too.
  await run.startChat(alice, carolPhone);
  // The group's composer is still on screen until the 1:1 chat opens.
  await alice.getByRole('main', { name: `Chat with ${carolPhone}` }).waitFor(WAIT);
  await send(alice, 'sentinel for carol');
  const aliceItem = carol.locator('.chat-item', { hasText: 'sentinel for carol' });
  await aliceItem.waitFor(WAIT);
  await openGroup(carol);
  await carol.locator('.system', { hasText: 'removed you' }).waitFor(WAIT);
  const leaked = await bubble(carol, 'after removal').count();
  if (leaked !== 0) throw new Error('carol, removed, still shows a message sent after her removal');
  const found = await carol.evaluate(() => new Promise((resolve, reject) => {
    const req = indexedDB.open('palaver');
    req.onsuccess = () => {
      const all = req.result.transaction('messages').objectStore('messages').getAll();
      all.onsuccess = () => resolve(all.result.filter((m) => m.text.includes('after removal')).length);
      all.onerror = () => reject(all.error);
    };
    req.onerror = () => reject(req.error);
  }));
  if (found !== 0) throw new Error(`carol's history holds ${found} message(s) sent after her removal`);

  state.step = 'alice adds carol back; carol reads new messages';
  await alice.locator('.chat-item', { hasText: GROUP }).click();
  await alice.getByRole('button', { name: 'Members' }).click();
  await alice.getByLabel('Phone number of the new member').fill(carolPhone);
  await alice.getByRole('button', { name: 'Add member' }).click();
  await carol.getByTestId('chat-sub').filter({ hasText: '4 members' }).waitFor(WAIT);
  await send(alice, 'welcome back carol');
  await bubble(carol, 'welcome back carol').waitFor(WAIT);
  await bubble(bob, 'welcome back carol').waitFor(WAIT);

  state.step = 'carol leaves';
  await carol.getByRole('button', { name: 'Members' }).click();
  await carol.getByRole('button', { name: 'Leave group' }).click();
  await carol.locator('.composer.left').waitFor(WAIT);
  await alice.locator('.system', { hasText: `${carolPhone} left` }).waitFor(WAIT);
  await alice.getByTestId('chat-sub').filter({ hasText: '3 members' }).waitFor(WAIT);
  await run.shot(alice, '05-after-leave');

  state.step = 'reload keeps the group and its keys';
  await bob.reload();
  await bob.locator('.status.online').waitFor(WAIT);
  await openGroup(bob);
  await bubble(bob, 'welcome back carol').waitFor(WAIT);
  await send(alice, 'after bob reloaded');
  await bubble(bob, 'after bob reloaded').waitFor(WAIT);

  state.step = 'the pickle key is wrapped by a non-extractable key';
  const kv = await bob.evaluate(() => new Promise((resolve, reject) => {
    const req = indexedDB.open('palaver');
    req.onsuccess = () => {
      const store = req.result.transaction('kv').objectStore('kv');
      const clear = store.get('pickle_key');
      const wrap = store.get('wrap_key');
      wrap.onsuccess = () => resolve({
        clear: clear.result !== undefined,
        type: wrap.result?.type, extractable: wrap.result?.extractable, algorithm: wrap.result?.algorithm?.name,
      });
      wrap.onerror = () => reject(wrap.error);
    };
    req.onerror = () => reject(req.error);
  }));
  if (kv.clear || kv.type !== 'secret' || kv.extractable !== false || kv.algorithm !== 'AES-GCM') {
    throw new Error(`pickle key storage: ${JSON.stringify(kv)}`);
  }
  return {};
});
