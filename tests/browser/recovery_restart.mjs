// tests/browser/recovery_restart.mjs - RELIABILITY (needs issue 11's history and recovery on the
// server; run.sh runs it always).
//  1. Redis, two nodes: tab B's node is killed (SIGKILL) and started again on the same port while
//     tab A, on the other node, sends 5 messages. B reconnects, rejoins with
//     "since":{"seq":<last seen>,"epoch":<epoch>}, gets "recovered":true and shows exactly the 5
//     missed messages, in order, once each, without a history reload and without the
//     "could not be recovered" notice; live messages follow.
//  2. Memory broker, one node restarted: the history is gone (a new epoch), so the rejoin gets
//     "recovered":false; the page says "some messages could not be recovered; reloading", asks for
//     the history again, and keeps what it showed before (once).
//
// usage: node recovery_restart.mjs <path-to-chat-gateway-binary>
import {
  Gateway, connected, expectIn, hasMessage, joinedRoom, launch, log, main, messagesIn, openPage, say, sleep,
  startRedis, uniq, until,
} from './lib.mjs';

async function acked(tab, r, text) {
  await expectIn(tab, `"${text}" not acknowledged`, ([room, t]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${room}"] .msg`)].some((m) =>
      m.querySelector('.text')?.textContent === t && m.dataset.state === 'acked'), [r, text]);
}

function lastSocket(tab) { return tab.sockets[tab.sockets.length - 1]; }

async function overRedis(binary) {
  const redis = await startRedis();
  const args = ['--redis-url', redis.url];
  const g1 = await new Gateway(binary, { nodeId: 'node-b', args }).start();
  const g2 = await new Gateway(binary, { nodeId: 'node-a', args }).start();
  const room = uniq('rec');
  const a = await openPage('A', `${g2.base}/#room=${room}`);
  const b = await openPage('B', `${g1.base}/#room=${room}`);
  for (const t of [a, b]) { await connected(t); await joinedRoom(t, room); }
  await say(a, 'seen before the kill');
  await hasMessage(b, room, 'seen before the kill');
  const seen = b.received().filter((f) => f.type === 'chat' && f.room === room).pop();
  if (typeof seen?.seq !== 'number' || typeof seen?.epoch !== 'string') {
    throw new Error(`chat carries no seq/epoch (history not on the server yet): ${JSON.stringify(seen)}`);
  }
  const historyAsks = b.sent().filter((f) => f.type === 'history').length;

  await g1.stop('SIGKILL');
  log('node-b killed');
  await expectIn(b, 'tab B did not notice the lost connection', () =>
    document.querySelector('#status')?.dataset.state === 'reconnecting');
  const missed = [1, 2, 3, 4, 5].map((i) => `missed ${i} <i>while away</i>`);
  for (const t of missed) { await say(a, t); await acked(a, room, t); }
  await g1.start();
  log('node-b started again; tab A sent 5 messages meanwhile');

  await connected(b);
  await joinedRoom(b, room);
  const sock = lastSocket(b);
  const join = sock.sent.find((f) => f.type === 'join' && f.room === room);
  if (!join?.since || join.since.seq !== seen.seq || join.since.epoch !== seen.epoch) {
    throw new Error(`tab B rejoined with ${JSON.stringify(join)}; expected since {"seq":${seen.seq},"epoch":"${seen.epoch}"}`);
  }
  const joined = sock.received.find((f) => f.type === 'joined' && f.room === room);
  if (joined?.recovered !== true) throw new Error(`the rejoin answered ${JSON.stringify(joined)}; expected "recovered":true`);
  await hasMessage(b, room, missed[4], 'tab B did not get the missed messages after reconnecting');
  await sleep(500);
  const texts = (await messagesIn(b, room)).map((m) => m.text);
  const want = ['seen before the kill', ...missed];
  if (JSON.stringify(texts) !== JSON.stringify(want)) {
    throw new Error(`tab B shows ${JSON.stringify(texts)}; expected ${JSON.stringify(want)} (each once, in order)`);
  }
  const seqs = (await messagesIn(b, room)).map((m) => Number(m.seq));
  for (let i = 1; i < seqs.length; i++) if (seqs[i] !== seqs[i - 1] + 1) throw new Error(`seqs not consecutive: ${seqs}`);
  if (await b.page.$(`#messages ol[data-room="${room}"] li[data-event="unrecovered"]`)) {
    throw new Error('tab B says messages could not be recovered although the server recovered them');
  }
  if (b.sent().filter((f) => f.type === 'history').length !== historyAsks) {
    throw new Error('tab B reloaded the history although the rejoin recovered');
  }
  await say(a, 'live after the recovery');
  await hasMessage(b, room, 'live after the recovery');
  log('tab B recovered the 5 missed messages after the node restart');
  await a.page.context().close();
  await b.page.context().close();
  for (const g of [g1, g2]) await g.stop();
  await redis.stop();
}

async function overMemory(binary) {
  const gw = await new Gateway(binary, { nodeId: 'node-m' }).start();
  const room = uniq('lost');
  const a = await openPage('M', `${gw.base}/#room=${room}`);
  await connected(a);
  await joinedRoom(a, room);
  await say(a, 'said before the restart');
  await acked(a, room, 'said before the restart');
  const seen = a.received().filter((f) => f.type === 'chat' && f.room === room).pop();
  if (typeof seen?.seq !== 'number') throw new Error(`chat carries no seq: ${JSON.stringify(seen)}`);

  await gw.stop();
  await gw.start();
  await connected(a);
  await joinedRoom(a, room);
  const sock = lastSocket(a);
  const join = sock.sent.find((f) => f.type === 'join' && f.room === room);
  if (!join?.since || join.since.seq !== seen.seq || join.since.epoch !== seen.epoch) {
    throw new Error(`tab M rejoined with ${JSON.stringify(join)}; expected since {"seq":${seen.seq},"epoch":"${seen.epoch}"}`);
  }
  const joined = sock.received.find((f) => f.type === 'joined' && f.room === room);
  if (joined?.recovered !== false || joined.epoch === seen.epoch) {
    throw new Error(`after a memory broker restart the rejoin answered ${JSON.stringify(joined)}; expected "recovered":false and a new epoch`);
  }
  await expectIn(a, 'no "could not be recovered" notice', (r) =>
    /some messages could not be recovered; reloading/.test(
      document.querySelector(`#messages ol[data-room="${r}"] li[data-event="unrecovered"]`)?.textContent || ''), room);
  await until('no history request after recovered:false', () => sock.sent.some((f) => f.type === 'history' && f.room === room));
  await until('no history answer after recovered:false', () => sock.received.some((f) => f.type === 'history' && f.room === room));
  await say(a, 'said after the restart');
  await acked(a, room, 'said after the restart');
  const texts = (await messagesIn(a, room)).map((m) => m.text);
  if (JSON.stringify(texts) !== JSON.stringify(['said before the restart', 'said after the restart'])) {
    throw new Error(`tab M shows ${JSON.stringify(texts)} after the reload`);
  }
  log('tab M: recovered:false -> notice and history reload');
}

async function run(binary) {
  await launch();
  await overRedis(binary);
  await overMemory(binary);
  return 'recovered:true with the 5 missed messages after SIGKILL and restart (Redis); recovered:false -> notice and history reload (memory)';
}

await main('recovery_restart', run, 100_000);
