// tests/browser/reconnect.mjs - the gateway restarts under the page (SIGTERM, then a new process
// on the same port): the page reconnects with backoff (a bounded number of attempts while the
// server is down), on ONE new connection rejoins every room it was in, says that it rejoined,
// and a message written while disconnected is shown as pending, then sent with the cid it got
// when written and acknowledged once.
//
// usage: node reconnect.mjs <path-to-chat-gateway-binary>
import {
  Gateway, connected, expectIn, hasMessage, joinedRoom, launch, log, main, messagesIn, openPage, say, sleep,
  uniq, view,
} from './lib.mjs';

const DOWN_MS = 3000;

async function run(binary) {
  const gw = await new Gateway(binary).start();
  await launch();
  const r1 = uniq('rc1'), r2 = uniq('rc2');
  const a = await openPage('A', `${gw.base}/#rooms=${r1},${r2}&view=${r1}`);
  const b = await openPage('B', `${gw.base}/#rooms=${r1}`);
  for (const t of [a, b]) { await connected(t); await joinedRoom(t, r1); }
  await joinedRoom(a, r2);
  await say(b, 'before the restart');
  await hasMessage(a, r1, 'before the restart');

  await gw.stop();
  log('gateway stopped');
  await expectIn(a, 'page did not notice the lost connection', () =>
    document.querySelector('#status')?.dataset.state === 'reconnecting');
  const socketsAtStop = a.sockets.length;

  // Written while disconnected: pending, not sent.
  const queued = `queued while down ${Math.random().toString(36).slice(2, 6)}`;
  await a.page.fill('#text', queued);
  await a.page.click('#send');
  const bubble = await expectIn(a, 'no pending bubble for the message written while disconnected', ([r, t]) => {
    const m = [...document.querySelectorAll(`#messages ol[data-room="${r}"] .msg`)].find((x) => x.querySelector('.text')?.textContent === t);
    return m && m.dataset.state === 'pending' && m.dataset.cid ? m.dataset.cid : null;
  }, [r1, queued]);
  const cid = await bubble.jsonValue();
  await sleep(DOWN_MS);
  const attempts = a.sockets.length - socketsAtStop;
  if (attempts > 6) throw new Error(`tab A tried ${attempts} connections in ${DOWN_MS / 1000} s while the server was down: no backoff`);
  if (a.sent().some((f) => f.type === 'chat' && f.text === queued)) throw new Error('the queued message was sent while disconnected?');

  await gw.start();
  log(`gateway restarted; tab A made ${attempts} attempts while it was down`);
  await connected(a);
  await joinedRoom(a, r1);
  await joinedRoom(a, r2);
  const live = a.sockets.filter((s) => !s.closed);
  if (live.length !== 1) throw new Error(`tab A has ${live.length} open WebSockets after reconnecting, expected 1`);
  const last = live[0];
  const joins = last.sent.filter((f) => f.type === 'join').map((f) => f.room).sort();
  if (JSON.stringify(joins) !== JSON.stringify([r1, r2].sort())) {
    throw new Error(`on its new connection tab A joined ${JSON.stringify(joins)}, expected each of ${r1}, ${r2} once`);
  }
  await expectIn(a, 'no notice that the room was rejoined', (r) =>
    !!document.querySelector(`#messages ol[data-room="${r}"] li[data-event="rejoined"], ` +
      `#messages ol[data-room="${r}"] li[data-event="unrecovered"], #messages ol[data-room="${r}"] li[data-event="recovered"]`), r1);

  // The queued message: sent once on the new connection, with its cid, acknowledged, shown once.
  await expectIn(a, 'the queued message was not acknowledged after the reconnect', ([r, t]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${r}"] .msg`)].some((m) =>
      m.querySelector('.text')?.textContent === t && m.dataset.state === 'acked' && !!m.dataset.id), [r1, queued], 12_000);
  const sends = a.sent().filter((f) => f.type === 'chat' && f.text === queued);
  if (sends.length !== 1 || sends[0].cid !== cid || sends[0].room !== r1) {
    throw new Error(`the queued message went out as ${JSON.stringify(sends)}; expected once to ${r1} with cid ${cid}`);
  }
  await sleep(300);
  const shown = (await messagesIn(a, r1)).filter((m) => m.text === queued);
  if (shown.length !== 1) throw new Error(`tab A shows the queued message ${shown.length} times`);

  // B is back too, and the rooms work: a message from B reaches A (in r1, not r2).
  await connected(b);
  await joinedRoom(b, r1);
  await view(a, r2);
  await say(b, 'after the restart');
  await hasMessage(a, r1, 'after the restart');
  if ((await messagesIn(a, r2)).some((m) => m.text === 'after the restart')) throw new Error(`r1's message shows in ${r2}`);
  return `reconnected after ${attempts} attempts in ${DOWN_MS / 1000} s down, rejoined 2 rooms on one connection, queued send acked once with cid ${cid}`;
}

await main('reconnect', run);
