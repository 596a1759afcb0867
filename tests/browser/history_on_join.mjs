// tests/browser/history_on_join.mjs - RELIABILITY (needs issue 11's history on the server; run.sh
// runs it always). A tab that joins a room shows what was said before it
// came, from `history` (oldest first, each once, in seq order), then live messages; a tab that
// joins while another member keeps sending shows every message exactly once, in seq order (the
// history answer and the live deliveries overlap and are deduplicated). With --history-size 0 the
// page degrades: no history request, rooms still work.
//
// usage: node history_on_join.mjs <path-to-chat-gateway-binary>
import {
  Gateway, connected, expectIn, hasMessage, joinedRoom, launch, log, main, messagesIn, openPage, say, sleep, uniq,
} from './lib.mjs';

async function acked(tab, r, text) {
  await expectIn(tab, `"${text}" not acknowledged`, ([room, t]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${room}"] .msg`)].some((m) =>
      m.querySelector('.text')?.textContent === t && m.dataset.state === 'acked'), [r, text]);
}

function inSeqOrder(list, what) {
  const seqs = list.map((m) => Number(m.seq));
  if (seqs.some((s) => !Number.isInteger(s) || s <= 0)) throw new Error(`${what}: messages without a seq: ${JSON.stringify(list)}`);
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] <= seqs[i - 1]) throw new Error(`${what}: seq order broken at ${i}: ${seqs.join(',')}`);
  }
}

async function run(binary) {
  const gw = await new Gateway(binary).start();
  await launch();
  const room = uniq('hist');

  // A says three things before anyone else is there.
  const a = await openPage('A', `${gw.base}/#room=${room}`);
  await connected(a);
  await joinedRoom(a, room);
  const joinedA = a.received().find((f) => f.type === 'joined' && f.room === room);
  if (!joinedA || typeof joinedA.seq !== 'number' || typeof joinedA.epoch !== 'string') {
    throw new Error(`joined carries no seq/epoch (history off or not built yet): ${JSON.stringify(joinedA)}`);
  }
  const before = ['first <b>one</b>', 'second', 'third'];
  for (const t of before) { await say(a, t); await acked(a, room, t); }

  // B joins later: the three are shown from the history, in order, once each.
  const b = await openPage('B', `${gw.base}/#room=${room}`);
  await connected(b);
  await joinedRoom(b, room);
  await hasMessage(b, room, 'third', 'the history was not shown on join');
  const req = b.sent().filter((f) => f.type === 'history');
  if (req.length !== 1 || req[0].room !== room || req[0].limit !== 50) {
    throw new Error(`tab B sent history requests ${JSON.stringify(req)}; expected one {"type":"history","room":"${room}","limit":50}`);
  }
  const ans = b.received().find((f) => f.type === 'history' && f.room === room);
  if (!ans || !Array.isArray(ans.messages) || ans.messages.length !== 3) {
    throw new Error(`tab B got history ${JSON.stringify(ans)}; expected the 3 earlier messages`);
  }
  let shown = await messagesIn(b, room);
  if (JSON.stringify(shown.map((m) => m.text)) !== JSON.stringify(before)) {
    throw new Error(`tab B shows ${JSON.stringify(shown.map((m) => m.text))}, expected ${JSON.stringify(before)}`);
  }
  inSeqOrder(shown, 'tab B after the history');
  if (await b.page.$$eval(`#messages ol[data-room="${room}"] .msg b`, (e) => e.length)) throw new Error('history text rendered as HTML');
  log('tab B showed the 3 earlier messages from the history');

  // A live one follows, once.
  await say(a, 'fourth, live');
  await hasMessage(b, room, 'fourth, live');
  await sleep(300);
  shown = await messagesIn(b, room);
  if (JSON.stringify(shown.map((m) => m.text)) !== JSON.stringify([...before, 'fourth, live'])) {
    throw new Error(`tab B shows ${JSON.stringify(shown.map((m) => m.text))} after the live message`);
  }
  inSeqOrder(shown, 'tab B after the live message');

  // C joins while A keeps sending: history and live overlap; each message shows once, in order.
  const burst = Array.from({ length: 12 }, (_, i) => `burst ${i + 1}`);
  const c = await openPage('C');
  const sending = (async () => { for (const t of burst) { await say(a, t); await sleep(15); } })();
  await c.page.goto(`${gw.base}/#room=${room}`, { waitUntil: 'load' });
  await sending;
  await connected(c);
  await hasMessage(c, room, burst[burst.length - 1], 'tab C did not get the end of the burst');
  await sleep(500);
  const all = [...before, 'fourth, live', ...burst];
  shown = await messagesIn(c, room);
  const texts = shown.map((m) => m.text);
  for (const t of all) {
    const n = texts.filter((x) => x === t).length;
    if (n !== 1) throw new Error(`tab C shows "${t}" ${n} times (expected once): ${JSON.stringify(texts)}`);
  }
  if (JSON.stringify(texts) !== JSON.stringify(all)) throw new Error(`tab C shows ${JSON.stringify(texts)}, expected ${JSON.stringify(all)}`);
  inSeqOrder(shown, 'tab C');
  const fromHistory = c.received().filter((f) => f.type === 'history').flatMap((f) => f.messages.map((m) => m.id));
  const live = c.received().filter((f) => f.type === 'chat').map((f) => f.id);
  const both = live.filter((id) => fromHistory.includes(id)).length;
  log(`tab C joined during a burst and shows all ${all.length} messages once, in order ` +
    `(${fromHistory.length} from the history, ${live.length} live, ${both} in both)`);

  // History off: no history request, rooms still work.
  const off = await new Gateway(binary, { nodeId: 'browser-off', args: ['--history-size', '0'] }).start();
  const d = await openPage('D', `${off.base}/#room=${room}`);
  const e = await openPage('E', `${off.base}/#room=${room}`);
  for (const t of [d, e]) { await connected(t); await joinedRoom(t, room); }
  await say(d, 'no history here');
  await hasMessage(e, room, 'no history here');
  const joinedD = d.received().find((f) => f.type === 'joined');
  if ('seq' in joinedD) throw new Error(`with --history-size 0, joined still carries seq: ${JSON.stringify(joinedD)}`);
  if (d.sent().some((f) => f.type === 'history')) throw new Error('with history off the page still asked for history');
  return `history on join (3 earlier messages, then live), ${all.length} messages once each while joining during a burst, history off degrades`;
}

await main('history_on_join', run, 90_000);
