// The service worker (built to /sw.js, scope `/`): shows Web Push
// notifications. A push never carries message content, only what happened
// (docs/web.md, "Push"):
//   {"kind":"message","count":N}                      -> "N new messages"
//   {"kind":"call","call","from","video"}             -> "Incoming call" (until answered)
//   {"kind":"call_cancel","call"}                     -> closes that call's notification
// The caller's name comes from the page's IndexedDB (the chat list and the
// names it learned), never from the push. It is self-contained: it imports
// nothing, so the bundle stays one file.

const sw = self as any;

sw.addEventListener('install', () => sw.skipWaiting());
sw.addEventListener('activate', (ev: any) => ev.waitUntil(sw.clients.claim()));

sw.addEventListener('push', (ev: any) => {
  let data: any = null;
  try {
    data = ev.data ? ev.data.json() : null;
  } catch {
    data = null;
  }
  ev.waitUntil(handle(data));
});

sw.addEventListener('notificationclick', (ev: any) => {
  ev.notification.close();
  ev.waitUntil(focusApp());
});

async function handle(data: any): Promise<void> {
  if (!data || typeof data.kind !== 'string') return;
  if (data.kind === 'message') {
    const n = Number.isInteger(data.count) && data.count > 0 ? data.count : 1;
    await sw.registration.showNotification('Palaver', {
      body: n === 1 ? '1 new message' : `${n} new messages`,
      tag: 'palaver-messages',
      renotify: true,
    });
  } else if (data.kind === 'call' && typeof data.call === 'string') {
    const name = await contactName(Number(data.from));
    const what = data.video ? 'Video call' : 'Voice call';
    await sw.registration.showNotification('Incoming call', {
      body: name ? `${what} from ${name}` : what,
      tag: `call-${data.call}`,
      requireInteraction: true,
    });
  } else if (data.kind === 'call_cancel' && typeof data.call === 'string') {
    const shown = await sw.registration.getNotifications({ tag: `call-${data.call}` });
    for (const n of shown) n.close();
  }
}

async function focusApp(): Promise<void> {
  const open = await sw.clients.matchAll({ type: 'window', includeUncontrolled: true });
  for (const c of open) {
    if ('focus' in c) return void (await c.focus());
  }
  await sw.clients.openWindow('/');
}

/** The name the page knows for an account, or null (no database, no name). */
async function contactName(account: number): Promise<string | null> {
  if (!Number.isSafeInteger(account) || account <= 0) return null;
  try {
    const db = await openExisting();
    if (!db) return null;
    try {
      const chat = await get(db, 'chats', account);
      if (chat && typeof chat.name === 'string') return chat.name;
      const names = await get(db, 'kv', 'names');
      const name = names?.[String(account)];
      return typeof name === 'string' ? name : null;
    } finally {
      db.close();
    }
  } catch {
    return null;
  }
}

/** Opens the page's database without ever creating it (the page owns its schema). */
function openExisting(): Promise<IDBDatabase | null> {
  return new Promise((resolve) => {
    const req = indexedDB.open('palaver');
    let created = false;
    req.onupgradeneeded = () => {
      created = true;
      req.transaction?.abort();
    };
    req.onsuccess = () => resolve(created ? null : req.result);
    req.onerror = (ev) => {
      ev.preventDefault();
      resolve(null);
    };
  });
}

function get(db: IDBDatabase, store: string, key: IDBValidKey): Promise<any> {
  return new Promise((resolve, reject) => {
    if (!db.objectStoreNames.contains(store)) return resolve(undefined);
    const req = db.transaction(store).objectStore(store).get(key);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
