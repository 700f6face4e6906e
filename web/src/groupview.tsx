import { useState } from 'preact/hooks';
import type { Client } from './client';
import type { Chat } from './db';
import { isAdmin } from './groups';

/** The "New group" form of the chat list: a name and the members' phone numbers. */
export function NewGroup({ client, onClose }: { client: Client; onClose: () => void }) {
  const [name, setName] = useState('');
  const [phones, setPhones] = useState('');
  const [error, setError] = useState('');
  const submit = async (ev: Event) => {
    ev.preventDefault();
    setError('');
    const list = phones.split(/[,\s]+/).map((p) => p.trim()).filter(Boolean);
    try {
      await client.groups.create(name.trim(), list);
      onClose();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <form class="new-chat" onSubmit={submit}>
      <label>
        Group name
        <input name="group-name" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label>
        Members' phone numbers (comma separated)
        <input name="group-members" required value={phones} onInput={(e) => setPhones(e.currentTarget.value)} />
      </label>
      <button type="submit">Create group</button>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}

const ROLE: Record<string, string> = { creator: 'creator', admin: 'admin', member: '' };

/** Members of a group chat with the admin actions, adding a member and leaving. */
export function GroupMembers({ client, chat }: { client: Client; chat: Chat }) {
  const me = client.state.session!.account;
  const group = chat.group!;
  const admin = isAdmin(chat, me) && !chat.left;
  const [phone, setPhone] = useState('');
  const fail = (e: unknown) => client.changed({ error: (e as Error).message });
  const add = (ev: Event) => {
    ev.preventDefault();
    void client.groups.add(group, phone.trim()).then(() => setPhone(''), fail);
  };
  return (
    <section class="group-members" aria-label="Group members">
      <h3>{chat.members?.length ?? 0} members</h3>
      <ul>
        {(chat.members ?? []).map((m) => {
          const name = client.nameOf(m.account);
          return (
            <li key={m.account} data-account={m.account} data-role={m.role}>
              <span class="name">{name}</span>
              {ROLE[m.role] && <span class="role">{ROLE[m.role]}</span>}
              {admin && m.account !== me && m.role !== 'creator' && (
                <span class="member-actions">
                  {m.role === 'member' ? (
                    <button type="button" onClick={() => void client.groups.setAdmin(group, m.account, true).catch(fail)}>Make {name} admin</button>
                  ) : (
                    <button type="button" onClick={() => void client.groups.setAdmin(group, m.account, false).catch(fail)}>Dismiss {name} as admin</button>
                  )}
                  <button type="button" onClick={() => void client.groups.remove(group, m.account).catch(fail)}>Remove {name}</button>
                </span>
              )}
            </li>
          );
        })}
      </ul>
      {admin && (
        <form class="add-member" onSubmit={add}>
          <label>
            Phone number of the new member
            <input name="new-member" type="tel" required value={phone} onInput={(e) => setPhone(e.currentTarget.value)} />
          </label>
          <button type="submit">Add member</button>
        </form>
      )}
      {!chat.left && <button type="button" class="leave" onClick={() => void client.groups.leave(group).catch(fail)}>Leave group</button>}
    </section>
  );
}
