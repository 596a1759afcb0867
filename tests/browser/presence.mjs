// tests/browser/presence.mjs - RELIABILITY (needs issue 11's presence, not built yet; run.sh runs
// it with CHAT_BROWSER_PRESENCE=1). The page's "Present" list shows the people in the viewed
// room from `presence` (names from the tokens' users, the connection count in the title),
// refreshed on join/leave events and on a room switch: alice and bob; alice's second tab counts
// as one person with 2 connections (and bob sees one join notice for her); when bob leaves, his
// entry goes once the server's leave debounce has passed.
//
// usage: node presence.mjs <path-to-chat-gateway-binary>
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  Gateway, connected, expectIn, joinedRoom, launch, log, main, mintHS256, openPage, uniq, view, workdir,
} from './lib.mjs';

function people(tab, what, want) { // want: { user: connections }
  return expectIn(tab, what, (w) => {
    const items = [...document.querySelectorAll('#people > li')];
    const got = Object.fromEntries(items.map((li) => [li.dataset.user, (/\((\d+) connection/.exec(li.title) || [])[1]]));
    const keys = Object.keys(w);
    return items.length === keys.length && keys.every((u) => got[u] === String(w[u])) &&
      (document.querySelector('#people-note')?.textContent || '').startsWith(`${keys.length} `);
  }, want, 12_000);
}

async function run(binary) {
  const secret = crypto.randomBytes(32).toString('hex');
  const keyFile = path.join(workdir(), 'k1.key');
  fs.writeFileSync(keyFile, secret + '\n');
  const gw = await new Gateway(binary, { args: ['--jwt-secret-file', keyFile] }).start();
  const exp = Math.floor(Date.now() / 1000) + 600;
  const tok = (sub) => encodeURIComponent(mintHS256(secret, { sub, name: sub.toUpperCase(), exp }));
  await launch();
  const room = uniq('pres'), other = uniq('pres-other');

  const a = await openPage('A', `${gw.base}/#rooms=${room},${other}&view=${room}&token=${tok('alice')}`);
  await connected(a);
  await joinedRoom(a, room);
  await people(a, 'tab A does not list alice alone', { alice: 1 });
  const b = await openPage('B', `${gw.base}/#room=${room}&token=${tok('bob')}`);
  await connected(b);
  await joinedRoom(b, room);
  await people(a, 'tab A does not list alice and bob after bob joined', { alice: 1, bob: 1 });
  await people(b, 'tab B does not list alice and bob', { alice: 1, bob: 1 });
  log('alice and bob present');

  // alice's second tab: still 2 people, alice with 2 connections; bob saw one join for alice.
  const a2 = await openPage('A2', `${gw.base}/#room=${room}&token=${tok('alice')}`);
  await connected(a2);
  await joinedRoom(a2, room);
  await view(b, room);
  await people(b, 'tab B does not count alice\'s two tabs as one person with 2 connections', { alice: 2, bob: 1 });
  const joinsOfAlice = await b.page.$$eval(`#messages ol[data-room="${room}"] .sys[data-event="join"][data-user="alice"]`, (e) => e.length);
  if (joinsOfAlice !== 0) throw new Error(`tab B shows ${joinsOfAlice} join notices for alice (she was there before bob; her second tab is no new join)`);

  // A room switch asks again: the other room has alice alone.
  await view(a, other);
  await people(a, `tab A does not list alice alone in ${other}`, { alice: 1 });
  await view(a, room);
  await people(a, 'tab A lost the list when switching back', { alice: 2, bob: 1 });

  // bob leaves: his entry goes (after the server's leave debounce).
  await b.page.context().close();
  await people(a, 'tab A still lists bob after he left', { alice: 2 });
  log('bob gone from the list after his leave');
  const presenceAsks = a.sent().filter((f) => f.type === 'presence').length;
  return `presence lists alice (2 connections) and bob, follows a room switch and bob's leave (${presenceAsks} presence requests)`;
}

await main('presence', run, 60_000);
