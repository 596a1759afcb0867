// tests/browser/auth.mjs - the demo page against a gateway that requires a token
// (--jwt-secret-file): without one the page says that a token is required (the 401) and offers a
// token field instead of retrying; with a token (HS256, minted here) it connects and shows the
// token's `name` claim rather than the user id, in the header and on messages; a token signed
// with another key is reported as refused.
//
// usage: node auth.mjs <path-to-chat-gateway-binary>
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  Gateway, connected, expectIn, hasMessage, joinedRoom, launch, log, main, messagesIn, mintHS256, openPage,
  rawUpgrade, say, sleep, uniq, workdir,
} from './lib.mjs';

async function expectNeedsToken(tab, what) {
  await expectIn(tab, what, () => {
    const auth = document.querySelector('#auth');
    return document.querySelector('#status')?.dataset.state === 'needs-token' && auth && !auth.hidden &&
      !!document.querySelector('#token') && /token/i.test(document.querySelector('#auth-msg')?.textContent || '');
  }, undefined, 15_000);
}

// The page does not keep opening WebSockets once it asked for a token.
async function noRetryLoop(tab, waitMs) {
  const before = tab.sockets.length;
  await sleep(waitMs);
  const after = tab.sockets.length;
  if (after !== before) {
    throw new Error(`tab ${tab.name} opened ${after - before} more WebSockets within ${waitMs / 1000} s after asking for a token (retry loop)`);
  }
  if (before > 3) throw new Error(`tab ${tab.name} tried ${before} handshakes before asking for a token (expected at most 3)`);
  return before;
}

async function run(binary) {
  const secret = crypto.randomBytes(32).toString('hex');
  const keyFile = path.join(workdir(), 'k1.key');
  fs.writeFileSync(keyFile, secret + '\n');
  const gw = await new Gateway(binary, { args: ['--jwt-secret-file', keyFile] }).start();
  const now = Math.floor(Date.now() / 1000);
  const alice = { sub: `u-alice-${crypto.randomBytes(3).toString('hex')}`, name: 'Alice <i>Liddell</i>', exp: now + 600 };
  const bob = { sub: `u-bob-${crypto.randomBytes(3).toString('hex')}`, name: 'Bob B.', exp: now + 600 };
  const tokA = mintHS256(secret, alice, 'k1');
  const tokB = mintHS256(secret, bob);
  const forged = mintHS256(crypto.randomBytes(32).toString('hex'), alice);

  // The premise: this gateway answers an upgrade without a token with 401, with one with 101.
  const bare = await rawUpgrade(gw.port, '/ws');
  if (bare.status !== 401) throw new Error(`an upgrade without a token got ${bare.status}, expected 401 (${bare.body})`);
  const good = await rawUpgrade(gw.port, '/ws', [`Sec-WebSocket-Protocol: chat.v1, bearer.${tokA}`]);
  if (good.status !== 101) throw new Error(`an upgrade with a valid token got ${good.status}, expected 101`);

  await launch();
  const room = uniq('auth');

  // No token: the page asks for one, and stops trying.
  const a = await openPage('A', `${gw.base}/#room=${room}`);
  await expectNeedsToken(a, 'no "token required" state with a token field');
  const tries = await noRetryLoop(a, 3000);
  const status = await a.page.textContent('#status');
  const msg = await a.page.textContent('#auth-msg');
  if (!/401/.test(msg)) throw new Error(`the token prompt does not mention the 401: "${msg}"`);
  log(`tab A without a token: "${status}" after ${tries} handshakes, "${msg}"`);

  // A token typed into the field: connected, the name claim shown (as text), not the sub.
  await a.page.fill('#token', tokA);
  await a.page.click('#token-connect');
  await connected(a);
  await joinedRoom(a, room);
  const shown = await a.page.evaluate(() => {
    const me = document.querySelector('#me');
    return { text: me.textContent, user: me.dataset.user, kids: me.children.length, authHidden: document.querySelector('#auth').hidden };
  });
  if (shown.text !== alice.name || shown.user !== alice.sub) {
    throw new Error(`tab A shows "${shown.text}" (user ${shown.user}), expected the name claim "${alice.name}" for ${alice.sub}`);
  }
  if (shown.kids !== 0) throw new Error('the name claim was rendered as HTML (#me has child elements)');
  if (!shown.authHidden) throw new Error('the token prompt is still shown after connecting');
  const last = a.sockets[a.sockets.length - 1];
  if (/token=/.test(last.url)) throw new Error(`the token went into the URL (${last.url}); expected the bearer subprotocol`);
  log(`tab A with a token shows "${shown.text}"`);

  // B: the token in the hash. Messages carry names: B sees Alice's name, A sees Bob's.
  const b = await openPage('B', `${gw.base}/#room=${room}&token=${encodeURIComponent(tokB)}`);
  await connected(b);
  await joinedRoom(b, room);
  const meB = await b.page.textContent('#me');
  if (meB !== bob.name) throw new Error(`tab B shows "${meB}", expected "${bob.name}"`);
  if (b.sockets.length !== 1) throw new Error(`tab B with a token in the hash opened ${b.sockets.length} WebSockets, expected 1`);
  const text = `hello from alice ${Math.random().toString(36).slice(2, 6)}`;
  await say(a, text);
  await hasMessage(b, room, text);
  const atB = (await messagesIn(b, room)).find((m) => m.text === text);
  if (atB.label !== alice.name || atB.user !== alice.sub) {
    throw new Error(`tab B labels Alice's message "${atB.label}" (user ${atB.user}), expected "${alice.name}" (${alice.sub})`);
  }
  const atA = (await messagesIn(a, room)).find((m) => m.text === text);
  if (!atA.mine || atA.label !== alice.name) throw new Error(`tab A shows its own message as ${JSON.stringify(atA)}`);
  const reply = 'hi alice';
  await say(b, reply);
  await hasMessage(a, room, reply);
  const fromBob = (await messagesIn(a, room)).find((m) => m.text === reply);
  if (fromBob.label !== bob.name) throw new Error(`tab A labels Bob's reply "${fromBob.label}", expected "${bob.name}"`);
  await expectIn(a, `no join notice naming ${bob.name}`, ([r, n]) =>
    [...document.querySelectorAll(`#messages ol[data-room="${r}"] .sys[data-event="join"]`)].some((e) => e.textContent.includes(n)),
  [room, bob.name]);
  log('names shown on messages and notices');

  // A token signed with another key: refused, said so, not retried.
  const c = await openPage('C', `${gw.base}/#room=${room}&token=${encodeURIComponent(forged)}`);
  await expectNeedsToken(c, 'no "token refused" state for a forged token');
  await noRetryLoop(c, 2000);
  const cmsg = await c.page.textContent('#auth-msg');
  if (!/this token/i.test(cmsg)) throw new Error(`tab C's prompt does not say the token was refused: "${cmsg}"`);
  return `401 detected after ${tries} handshakes, token field, name claim "${alice.name}" shown, forged token refused`;
}

await main('auth', run);
