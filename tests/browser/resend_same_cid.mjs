// tests/browser/resend_same_cid.mjs - RELIABILITY (needs issue 11's idempotent sends with history
// on; run.sh runs it always). Tab A (alice, a token: the server
// deduplicates by user, room and cid) sends a message; the test swallows its ack and its own copy
// on the way to the page and drops the connection (close 4000), as a network failure right after
// sending would. The page keeps the message pending, reconnects, and sends it again with the SAME
// cid; the server answers the same ack (same id and seq) and delivers the message once: tab B
// shows it exactly once, with that id, and tab A shows it once, acknowledged.
//
// usage: node resend_same_cid.mjs <path-to-chat-gateway-binary>
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  Gateway, connected, expectIn, hasMessage, joinedRoom, launch, log, main, messagesIn, mintHS256, openPage, sleep,
  uniq, until, workdir,
} from './lib.mjs';

async function run(binary) {
  const secret = crypto.randomBytes(32).toString('hex');
  const keyFile = path.join(workdir(), 'k1.key');
  fs.writeFileSync(keyFile, secret + '\n');
  const gw = await new Gateway(binary, { args: ['--jwt-secret-file', keyFile] }).start();
  const exp = Math.floor(Date.now() / 1000) + 600;
  const tokA = mintHS256(secret, { sub: 'alice', name: 'Alice', exp });
  const tokB = mintHS256(secret, { sub: 'bob', name: 'Bob', exp });
  await launch();
  const room = uniq('cid');
  const text = `sent once ${Math.random().toString(36).slice(2, 6)}`;

  // Tab A's WebSockets go through a route that can swallow frames and drop the connection.
  const a = await openPage('A');
  const frames = { sent: [], received: [] };
  const swallowed = [];
  let dropCid = null;
  let routed = 0;
  const parse = (m) => { try { return JSON.parse(String(m)); } catch { return {}; } };
  await a.page.routeWebSocket(/\/ws$/, (ws) => {
    routed++;
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      const f = parse(m);
      frames.sent.push(f);
      if (routed === 1 && f.type === 'chat' && f.text === text) dropCid = f.cid;
      server.send(m);
    });
    server.onMessage((m) => {
      const f = parse(m);
      frames.received.push(f);
      if (routed === 1 && dropCid && f.room === room &&
          ((f.type === 'ack' && f.cid === dropCid) || (f.type === 'chat' && f.text === text))) {
        swallowed.push(f);
        if (swallowed.length === 2) {
          ws.close({ code: 4000, reason: 'test: connection lost' });
          server.close();
        }
        return;
      }
      ws.send(m);
    });
  });
  await a.page.goto(`${gw.base}/#room=${room}&token=${encodeURIComponent(tokA)}`, { waitUntil: 'load' });
  const b = await openPage('B', `${gw.base}/#room=${room}&token=${encodeURIComponent(tokB)}`);
  for (const t of [a, b]) { await connected(t); await joinedRoom(t, room); }

  await a.page.fill('#text', text);
  await a.page.click('#send');
  await hasMessage(b, room, text);
  await until('the first ack and own copy never reached the route', () => swallowed.length === 2);
  const firstAck = swallowed.find((f) => f.type === 'ack');
  if (typeof firstAck.seq !== 'number') throw new Error(`the ack carries no seq (history off?): ${JSON.stringify(firstAck)}`);
  log(`swallowed ${JSON.stringify(firstAck)} and the own copy; connection dropped`);

  await until('tab A did not reconnect', () => routed >= 2, 15_000);
  await connected(a);
  await joinedRoom(a, room);
  await expectIn(a, 'the resent message was not acknowledged', ([r, t]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${r}"] .msg`)].some((m) =>
      m.querySelector('.text')?.textContent === t && m.dataset.state === 'acked'), [room, text], 12_000);
  const sends = frames.sent.filter((f) => f.type === 'chat' && f.text === text);
  if (sends.length !== 2 || sends[1].cid !== sends[0].cid) {
    throw new Error(`tab A sent the message as ${JSON.stringify(sends)}; expected twice with the same cid`);
  }
  const acks = frames.received.filter((f) => f.type === 'ack' && f.cid === dropCid);
  const again = acks[acks.length - 1];
  if (acks.length !== 2 || again.id !== firstAck.id || again.seq !== firstAck.seq) {
    throw new Error(`acks for cid ${dropCid}: ${JSON.stringify(acks)}; expected the retry to get the same id and seq`);
  }
  await sleep(1500); // a duplicate delivery would have arrived by now
  const atB = (await messagesIn(b, room)).filter((m) => m.text === text);
  if (atB.length !== 1 || atB[0].id !== firstAck.id) {
    throw new Error(`tab B shows the message ${atB.length} times (${JSON.stringify(atB)}); expected once with id ${firstAck.id}`);
  }
  const atA = (await messagesIn(a, room)).filter((m) => m.text === text);
  if (atA.length !== 1 || atA[0].id !== firstAck.id || !atA[0].mine) {
    throw new Error(`tab A shows ${JSON.stringify(atA)}; expected its message once, acked with id ${firstAck.id}`);
  }
  return `retried with cid ${dropCid} after a lost ack: same ack (id ${firstAck.id}, seq ${firstAck.seq}), delivered once`;
}

await main('resend_same_cid', run, 70_000);
