// tests/browser/two_tabs.mjs - the demo page (web/index.html, served by the gateway at /) in two
// tabs of headless Chromium: it connects on load, a room from the location hash, join notice,
// typing indicator, a chat message from tab A seen in tab B with A's user id and shown literally
// (escaped), acknowledged in tab A, a reply, and a leave notice.
//
// usage: node two_tabs.mjs <path-to-chat-gateway-binary>
import {
  Gateway, connected, expectIn, hasMessage, joinedRoom, launch, log, main, messagesIn, openPage, say, uniq,
} from './lib.mjs';

const NODE_ID = 'browser-test';

async function run(binary) {
  const gw = await new Gateway(binary, { nodeId: NODE_ID }).start();

  // The demo page itself, checked over plain HTTP first for a precise message.
  let res, body;
  try {
    res = await fetch(`${gw.base}/`, { signal: AbortSignal.timeout(5000) });
    body = await res.text();
  } catch (e) {
    throw new Error(`GET / failed: ${e.cause?.message || e.message}`);
  }
  const ctype = res.headers.get('content-type') || '';
  if (res.status !== 200 || !/^text\/html/i.test(ctype) || !body.includes('id="messages"')) {
    throw new Error(`GET / answered ${res.status} "${ctype}" with ${body.length} bytes ` +
      `(${JSON.stringify(body.slice(0, 120))}); expected 200 text/html holding the demo page`);
  }

  await launch();
  const room = uniq('bt');
  const myId = async (t) => {
    await expectIn(t, '#me never showed the welcome user id',
      () => /^guest-/.test(document.querySelector('#me')?.textContent || ''));
    return t.page.textContent('#me');
  };

  // Tab A: nothing in the hash: it connects on load and joins the lobby; then the room by the form.
  const a = await openPage('A', `${gw.base}/`);
  await connected(a);
  await joinedRoom(a, 'lobby');
  await a.page.fill('#room', room);
  await a.page.press('#room', 'Enter');
  await joinedRoom(a, room);
  const userA = await myId(a);
  log(`tab A connected, joined lobby and ${room} as ${userA}`);

  // Tab B: the room comes from the location hash.
  const b = await openPage('B', `${gw.base}/#room=${room}`);
  await connected(b);
  await joinedRoom(b, room);
  const userB = await myId(b);
  log(`tab B connected as ${userB}`);
  for (const [n, u] of [['A', userA], ['B', userB]]) {
    if (!u.startsWith(`guest-${NODE_ID}-`)) throw new Error(`welcome.user of tab ${n} is "${u}", expected "guest-${NODE_ID}-<n>"`);
  }
  if (userA === userB) throw new Error(`both tabs got the same user id "${userA}"`);
  const viewB = await b.page.textContent('#title');
  if (viewB !== room) throw new Error(`tab B's title is "${viewB}", expected "${room}" from the hash`);

  // A sees B's join notice in that room's log.
  await expectIn(a, `no join notice for ${userB}`, ([r, u]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${r}"] .sys[data-event="join"]`)].some((e) => e.dataset.user === u),
  [room, userB]);
  log('tab A saw the join notice of tab B');

  // A types; B sees "<A> is typing…".
  await a.page.bringToFront();
  const text = `hello <b>from</b> A & "friends" ✓ ${Math.random().toString(36).slice(2, 8)}`;
  await a.page.locator('#text').pressSequentially(text.slice(0, 10), { delay: 20 });
  await expectIn(b, `no typing indicator for ${userA}`, (u) =>
    (document.querySelector('#typing')?.textContent || '').includes(`${u} is typing`), userA);
  log('tab B saw the typing indicator');
  await say(a, text);

  // B gets the message with A's user id; the text is shown literally (escaped).
  await hasMessage(b, room, text, `message from ${userA} not shown`);
  const shownB = await b.page.evaluate(([r, u, t]) => {
    const m = [...document.querySelectorAll(`#messages ol[data-room="${r}"] .msg`)].find((x) =>
      x.dataset.user === u && x.querySelector('.text')?.textContent === t);
    return m && { bold: m.querySelectorAll('b').length, ts: m.querySelector('.ts')?.textContent };
  }, [room, userA, text]);
  if (!shownB) throw new Error(`tab B shows the message, but not with data-user ${userA}`);
  if (shownB.bold !== 0) throw new Error('tab B rendered message text as HTML (found a <b> element)');
  if (!/^\d\d:\d\d:\d\d$/.test(shownB.ts || '')) throw new Error(`tab B shows time "${shownB.ts}", expected HH:MM:SS`);
  log('tab B received the message');

  // A shows it as its own and acknowledged (exactly once).
  await expectIn(a, 'own message not acknowledged', ([r, u, t]) => {
    const mine = [...document.querySelectorAll(`#messages ol[data-room="${r}"] .msg`)].filter((m) =>
      m.querySelector('.text')?.textContent === t);
    return mine.length === 1 && mine[0].dataset.user === u && mine[0].classList.contains('mine') &&
      mine[0].dataset.state === 'acked' && !!mine[0].dataset.id;
  }, [room, userA, text]);
  const sent = a.sent().filter((f) => f.type === 'chat' && f.text === text);
  if (sent.length !== 1 || sent[0].room !== room || typeof sent[0].cid !== 'string') {
    throw new Error(`tab A sent ${JSON.stringify(sent)}; expected one chat frame with room ${room} and a cid`);
  }
  log('tab A shows its message as acked');

  // The typing indicator in B is gone once the message arrived.
  await expectIn(b, 'typing indicator not cleared', () => (document.querySelector('#typing')?.textContent || '') === '');

  // A reply from B (Enter in the field) reaches A.
  await b.page.bringToFront();
  const reply = `reply from B ${Date.now()}`;
  await b.page.fill('#text', reply);
  await b.page.press('#text', 'Enter');
  await hasMessage(a, room, reply, `reply from ${userB} not shown`);
  await expectIn(b, 'reply not acknowledged', ([r, t]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${r}"] .msg.mine`)].some((m) =>
      m.querySelector('.text')?.textContent === t && m.dataset.state === 'acked'), [room, reply]);
  const fromB = (await messagesIn(a, room)).filter((m) => m.text === reply);
  if (fromB.length !== 1 || fromB[0].user !== userB || fromB[0].mine) {
    throw new Error(`tab A shows the reply as ${JSON.stringify(fromB)}; expected once, from ${userB}, not as its own`);
  }
  log('tab A received the reply of tab B');

  // Closing tab B makes A show a leave notice.
  await b.page.close();
  await expectIn(a, `no leave notice for ${userB}`, ([r, u]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${r}"] .sys[data-event="leave"]`)].some((e) => e.dataset.user === u),
  [room, userB]);
  log('tab A saw the leave notice of tab B');

  const errs = await a.page.$$eval('#messages .err', (els) => els.map((e) => e.textContent));
  if (errs.length) throw new Error(`tab A shows error notices: ${errs.join(' | ')}`);
  return `${userA} -> ${userB} in room ${room}: join, typing, message, ack, reply, leave`;
}

await main('two_tabs', run);
