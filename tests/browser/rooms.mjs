// tests/browser/rooms.mjs - several rooms on one connection: the page opens ONE WebSocket for
// every room (join/leave envelopes), keeps each room's messages apart, counts unread messages of
// the rooms not viewed (reset when viewed), sends to the viewed room, and leaving a room removes
// it without touching the others.
//
// usage: node rooms.mjs <path-to-chat-gateway-binary>
import {
  Gateway, connected, expectIn, hasMessage, joinViaForm, joinedRoom, launch, log, main, messagesIn, openPage,
  say, sleep, uniq, view,
} from './lib.mjs';

async function expectUnread(tab, r, n) {
  await expectIn(tab, `room ${r} does not show ${n} unread`, ([room, want]) => {
    const li = document.querySelector(`#rooms > li[data-room="${CSS.escape(room)}"]`);
    const badge = li?.querySelector('.unread');
    return li && li.dataset.unread === String(want) && (want === 0 ? badge.hidden : !badge.hidden && badge.textContent === String(want));
  }, [r, n]);
}

function oneSocket(tab, what) {
  const n = tab.sockets.length;
  if (n !== 1) throw new Error(`tab ${tab.name} opened ${n} WebSockets ${what}; expected exactly 1 (${tab.sockets.map((s) => s.url).join(', ')})`);
  if (!/\/ws$/.test(tab.sockets[0].url)) throw new Error(`tab ${tab.name} connected to ${tab.sockets[0].url}, expected /ws`);
}

async function run(binary) {
  const gw = await new Gateway(binary).start();
  await launch();
  const r1 = uniq('r1'), r2 = uniq('r2');

  // A: loads with no hash (lobby), joins r1 and r2 through the form.
  const a = await openPage('A', `${gw.base}/`);
  await connected(a);
  await joinedRoom(a, 'lobby');
  await joinViaForm(a, r1);
  await joinedRoom(a, r1);
  await joinViaForm(a, r2);
  await joinedRoom(a, r2);
  const rooms = await a.page.$$eval('#rooms > li', (els) => els.map((e) => e.dataset.room));
  if (JSON.stringify(rooms) !== JSON.stringify(['lobby', r1, r2])) {
    throw new Error(`tab A lists rooms ${JSON.stringify(rooms)}, expected lobby, ${r1}, ${r2}`);
  }
  const joins = a.sent().filter((f) => f.type === 'join').map((f) => f.room);
  if (JSON.stringify(joins) !== JSON.stringify(['lobby', r1, r2])) {
    throw new Error(`tab A sent joins ${JSON.stringify(joins)}, expected one each for lobby, ${r1}, ${r2}`);
  }
  oneSocket(a, 'for three rooms');
  log('tab A: lobby, r1, r2 joined on one WebSocket');

  // B: two rooms from the hash, viewing r1.
  const b = await openPage('B', `${gw.base}/#rooms=${r1},${r2}&view=${r1}`);
  await connected(b);
  await joinedRoom(b, r1);
  await joinedRoom(b, r2);
  oneSocket(b, 'for two rooms');

  // A views r2; B says something in r1: A's r1 gets one unread, r2's log stays clean.
  await view(a, r2);
  const m1 = `m1 for ${r1} ${Math.random().toString(36).slice(2, 6)}`;
  await say(b, m1);
  await hasMessage(a, r1, m1);
  await expectUnread(a, r1, 1);
  await expectUnread(a, r2, 0);
  if ((await messagesIn(a, r2)).some((m) => m.text === m1)) throw new Error(`r1's message shows in tab A's log of ${r2}`);
  const visible = await a.page.$$eval('#messages ol.log:not([hidden]) .msg .text', (els) => els.map((e) => e.textContent));
  if (visible.includes(m1)) throw new Error(`tab A views ${r2} but its visible log shows r1's message`);
  log('tab A: r1 has 1 unread while r2 is viewed; r2 does not show it');

  // A second one makes it 2; B then switches to r2 and speaks there (the frame names r2).
  const m1b = `m1b for ${r1}`;
  await say(b, m1b);
  await expectUnread(a, r1, 2);
  await view(b, r2);
  const m2 = `m2 for ${r2} ${Math.random().toString(36).slice(2, 6)}`;
  await say(b, m2);
  await hasMessage(a, r2, m2);
  await expectUnread(a, r2, 0); // viewed: not unread
  const chats = b.sent().filter((f) => f.type === 'chat').map((f) => [f.text, f.room]);
  if (JSON.stringify(chats) !== JSON.stringify([[m1, r1], [m1b, r1], [m2, r2]])) {
    throw new Error(`tab B sent chats ${JSON.stringify(chats)}; each should name the room viewed when it was sent`);
  }
  if ((await messagesIn(a, r1)).some((m) => m.text === m2)) throw new Error(`r2's message shows in tab A's log of ${r1}`);
  if ((await messagesIn(b, r1)).some((m) => m.text === m2)) throw new Error(`tab B shows its r2 message under ${r1}`);

  // Viewing r1 resets its unread count and shows both of its messages, in order, and not m2.
  await view(a, r1);
  await expectUnread(a, r1, 0);
  const title = await a.page.textContent('#title');
  if (title !== r1) throw new Error(`tab A's title is "${title}" while viewing ${r1}`);
  const inR1 = await a.page.$$eval('#messages ol.log:not([hidden]) .msg .text', (els) => els.map((e) => e.textContent));
  if (JSON.stringify(inR1) !== JSON.stringify([m1, m1b])) {
    throw new Error(`tab A's visible r1 log shows ${JSON.stringify(inR1)}, expected ${JSON.stringify([m1, m1b])}`);
  }
  log('tab A: viewing r1 reset its unread count and shows r1 only');

  // Switching back and forth is only a view change: no new connection, no new join.
  await view(a, 'lobby');
  await view(a, r2);
  await view(a, r1);
  await sleep(300);
  oneSocket(a, 'after switching rooms');
  const joinsAfter = a.sent().filter((f) => f.type === 'join').length;
  if (joinsAfter !== 3) throw new Error(`tab A sent ${joinsAfter} joins after switching rooms, expected still 3`);

  // A leaves r2: a leave envelope, the room disappears, B sees A leave r2 but A stays in r1.
  const userA = await a.page.getAttribute('#me', 'data-user');
  await a.page.click(`#rooms > li[data-room="${r2}"] .leave`);
  await expectIn(a, `room ${r2} still listed after leaving it`, (room) =>
    !document.querySelector(`#rooms > li[data-room="${CSS.escape(room)}"]`), r2);
  if (!a.sent().some((f) => f.type === 'leave' && f.room === r2)) throw new Error(`tab A sent no leave for ${r2}`);
  await expectIn(b, `tab B saw no leave notice for ${userA} in ${r2}`, ([room, u]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${room}"] .sys[data-event="leave"]`)].some((e) => e.dataset.user === u),
  [r2, userA]);
  await view(b, r1);
  const m3 = `m3 for ${r1} after the leave`;
  await say(b, m3);
  await hasMessage(a, r1, m3);
  oneSocket(a, 'after leaving a room');
  oneSocket(b, 'at the end');
  return `3 rooms on 1 WebSocket per tab; logs apart; unread 1, 2, reset on view; sends name the viewed room; leave`;
}

await main('rooms', run);
