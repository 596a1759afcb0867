// tests/browser/two_tabs.mjs - the demo page (web/index.html, served by the gateway at /) in two
// tabs of headless Chromium: join notice, typing indicator, a chat message from tab A seen in tab B
// with A's user id and acknowledged in tab A, a reply, and a leave notice.
//
// usage: node two_tabs.mjs <path-to-chat-gateway-binary>
// Exit code 0 on success, 1 on failure; the last line printed is the one-line result.
import { spawn } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { chromium } from 'playwright-core';

const OVERALL_MS = 60_000;
const STEP_MS = 8_000; // one wait inside the page
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const NODE_ID = 'browser-test';

const binary = process.argv[2];
if (!binary) {
  console.error('usage: node two_tabs.mjs <path-to-chat-gateway-binary>');
  process.exit(2);
}

const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

let gateway = null; // ChildProcess
let gatewayExit = null; // { code, signal } once it exited
let gatewayOut = ''; // last part of its stdout+stderr
let browser = null;
let workdir = null; // the gateway's working directory, removed at the end
const frames = []; // recent WebSocket traffic seen by the pages, for failure reports
const pageErrors = [];

function keepOutput(chunk) {
  gatewayOut = (gatewayOut + chunk.toString()).slice(-6000);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

async function waitForPort(port, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (gatewayExit?.error) throw new Error(`cannot start the gateway ${binary}: ${gatewayExit.error}`);
    if (gatewayExit) {
      throw new Error(`gateway exited before listening (code ${gatewayExit.code}, signal ${gatewayExit.signal})`);
    }
    if (await canConnect(port)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gateway did not accept connections on 127.0.0.1:${port} within ${ms / 1000} s`);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Waits for fn(arg) to be truthy in the page; on timeout throws `what` plus the page's state.
async function expectIn(page, name, what, fn, arg) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: STEP_MS, polling: 100 });
  } catch (e) {
    throw new Error(`${what} (tab ${name}, waited ${STEP_MS / 1000} s); tab ${name} shows ${await pageState(page)}`);
  }
}

async function pageState(page) {
  try {
    return await page.evaluate(() => {
      const q = (s) => document.querySelector(s);
      const items = [...document.querySelectorAll('#messages > li')].slice(-8).map((li) => {
        const d = Object.entries(li.dataset).map(([k, v]) => `${k}=${v}`).join(',');
        return `[${li.className}${d ? ' ' + d : ''}] ${li.textContent}`;
      });
      return JSON.stringify({
        status: q('#status')?.textContent,
        detail: q('#detail')?.textContent,
        me: q('#me')?.textContent,
        typing: q('#typing')?.textContent,
        items,
      });
    });
  } catch (e) {
    return `(page state unavailable: ${e.message})`;
  }
}

function watchPage(page, name) {
  page.on('pageerror', (e) => pageErrors.push(`tab ${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`tab ${name} console: ${m.text()}`);
  });
  page.on('websocket', (ws) => {
    const note = (s) => {
      frames.push(`tab ${name} ${s}`);
      if (frames.length > 40) frames.shift();
    };
    note(`open ${ws.url()}`);
    ws.on('framesent', (f) => note(`-> ${String(f.payload).slice(0, 300)}`));
    ws.on('framereceived', (f) => note(`<- ${String(f.payload).slice(0, 300)}`));
    ws.on('socketerror', (e) => note(`socket error ${e}`));
    ws.on('close', () => note('closed'));
  });
}

async function stopGateway() {
  if (!gateway || gatewayExit) return gatewayExit;
  const exited = new Promise((r) => gateway.once('exit', (code, signal) => r({ code, signal })));
  gateway.kill('SIGTERM');
  const res = await Promise.race([exited, sleep(5000).then(() => null)]);
  if (res) return res;
  gateway.kill('SIGKILL');
  await Promise.race([exited, sleep(2000)]);
  throw new Error('gateway did not exit within 5 s of SIGTERM (killed with SIGKILL)');
}

async function cleanup() {
  if (browser) {
    const b = browser;
    browser = null;
    await Promise.race([b.close().catch(() => {}), sleep(5000)]);
  }
  try {
    return await stopGateway();
  } finally {
    if (workdir) fs.rmSync(workdir, { recursive: true, force: true });
  }
}

function startGateway(port) {
  gatewayExit = null;
  gatewayOut = '';
  // No CHAT_* variable from the caller's shell reaches the gateway (as in tests/integration).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHAT_')));
  gateway = spawn(binary, ['--listen', `127.0.0.1:${port}`, '--node-id', NODE_ID,
    '--admin-listen', '', '--drain-delay', '0', '--drain-timeout', '2s'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: workdir,
    env,
  });
  gateway.stdout.on('data', keepOutput);
  gateway.stderr.on('data', keepOutput);
  gateway.on('exit', (code, signal) => { gatewayExit = { code, signal }; });
  gateway.on('error', (e) => { gatewayExit = { code: null, signal: null, error: e.message }; });
}

async function run() {
  // The gateway runs in a scratch directory; a port taken between freePort() and its bind is
  // the one start-up failure worth another try.
  workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-gw-browser-'));
  let port;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    startGateway(port);
    try {
      await waitForPort(port, 10_000);
      break;
    } catch (e) {
      if (attempt < 3 && gatewayExit && /in use/i.test(gatewayOut)) continue;
      throw e;
    }
  }
  const base = `http://127.0.0.1:${port}`;
  log(`gateway pid ${gateway.pid} listening on 127.0.0.1:${port}`);

  // The demo page itself, checked over plain HTTP first for a precise message.
  let res, body;
  try {
    res = await fetch(`${base}/`, { signal: AbortSignal.timeout(5000) });
    body = await res.text();
  } catch (e) {
    throw new Error(`GET / failed: ${e.cause?.message || e.message}`);
  }
  const ctype = res.headers.get('content-type') || '';
  if (res.status !== 200 || !/^text\/html/i.test(ctype) || !body.includes('id="messages"')) {
    throw new Error(`GET / answered ${res.status} "${ctype}" with ${body.length} bytes ` +
      `(${JSON.stringify(body.slice(0, 120))}); expected 200 text/html holding the demo page`);
  }

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 20_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_MS);
  const room = `bt-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

  const connected = (p, n) => expectIn(p, n, 'page did not reach status "connected"',
    () => document.querySelector('#status')?.textContent === 'connected');
  const myId = async (p, n) => {
    await expectIn(p, n, '#me never showed the welcome user id',
      () => /^guest-/.test(document.querySelector('#me')?.textContent || ''));
    return p.textContent('#me');
  };

  // Tab A: type the room into the form and press Connect.
  const a = await context.newPage();
  watchPage(a, 'A');
  await a.goto(`${base}/`, { waitUntil: 'load' });
  await a.fill('#room', room);
  await a.click('#connect');
  await connected(a, 'A');
  const userA = await myId(a, 'A');
  log(`tab A connected to room ${room} as ${userA}`);

  // Tab B: the room comes from the location hash.
  const b = await context.newPage();
  watchPage(b, 'B');
  await b.goto(`${base}/#room=${room}`, { waitUntil: 'load' });
  await b.click('#connect'); // already connecting from the hash: a no-op
  await connected(b, 'B');
  const userB = await myId(b, 'B');
  log(`tab B connected as ${userB}`);

  for (const [n, u] of [['A', userA], ['B', userB]]) {
    if (!u.startsWith(`guest-${NODE_ID}-`)) {
      throw new Error(`welcome.user of tab ${n} is "${u}", expected "guest-${NODE_ID}-<n>"`);
    }
  }
  if (userA === userB) throw new Error(`both tabs got the same user id "${userA}"`);
  const roomInB = await b.inputValue('#room');
  if (roomInB !== room) throw new Error(`tab B's #room is "${roomInB}", expected "${room}" from the hash`);

  // A sees B's join notice.
  await expectIn(a, 'A', `no join notice for ${userB}`, (u) =>
    [...document.querySelectorAll('#messages .sys[data-event="join"]')].some((e) => e.dataset.user === u), userB);
  log('tab A saw the join notice of tab B');

  // A types; B sees "<A> is typing…".
  await a.bringToFront();
  const text = `hello <b>from</b> A & "friends" ✓ ${Math.random().toString(36).slice(2, 8)}`;
  await a.locator('#text').pressSequentially(text.slice(0, 10), { delay: 20 });
  await expectIn(b, 'B', `no typing indicator for ${userA}`, (u) =>
    (document.querySelector('#typing')?.textContent || '').includes(`${u} is typing`), userA);
  log('tab B saw the typing indicator');
  await a.fill('#text', text);
  await a.click('#send');

  // B gets the message with A's user id; the text is shown literally (escaped).
  await expectIn(b, 'B', `message from ${userA} not shown`, ([u, t]) =>
    [...document.querySelectorAll('#messages .msg')].some((m) =>
      m.dataset.user === u && m.querySelector('.text')?.textContent === t), [userA, text]);
  const shownB = await b.evaluate(([u, t]) => {
    const m = [...document.querySelectorAll('#messages .msg')].find((x) =>
      x.dataset.user === u && x.querySelector('.text')?.textContent === t);
    return { bold: m.querySelectorAll('b').length, ts: m.querySelector('.ts')?.textContent };
  }, [userA, text]);
  if (shownB.bold !== 0) throw new Error('tab B rendered message text as HTML (found a <b> element)');
  if (!/^\d\d:\d\d:\d\d$/.test(shownB.ts || '')) throw new Error(`tab B shows time "${shownB.ts}", expected HH:MM:SS`);
  log('tab B received the message');

  // A shows it as its own and acknowledged (exactly once).
  await expectIn(a, 'A', 'own message not acknowledged', ([u, t]) => {
    const mine = [...document.querySelectorAll('#messages .msg')].filter((m) =>
      m.querySelector('.text')?.textContent === t);
    return mine.length === 1 && mine[0].dataset.user === u && mine[0].classList.contains('mine') &&
      mine[0].dataset.state === 'acked' && !!mine[0].dataset.id;
  }, [userA, text]);
  log('tab A shows its message as acked');

  // The typing indicator in B is gone once the message arrived.
  await expectIn(b, 'B', 'typing indicator not cleared', () =>
    (document.querySelector('#typing')?.textContent || '') === '');

  // A reply from B reaches A.
  await b.bringToFront();
  const reply = `reply from B ${Date.now()}`;
  await b.fill('#text', reply);
  await b.press('#text', 'Enter');
  await expectIn(a, 'A', `reply from ${userB} not shown`, ([u, t]) =>
    [...document.querySelectorAll('#messages .msg')].some((m) =>
      m.dataset.user === u && m.querySelector('.text')?.textContent === t), [userB, reply]);
  await expectIn(b, 'B', 'reply not acknowledged', (t) =>
    [...document.querySelectorAll('#messages .msg.mine')].some((m) =>
      m.querySelector('.text')?.textContent === t && m.dataset.state === 'acked'), reply);
  log('tab A received the reply of tab B');

  // Closing tab B makes A show a leave notice.
  await b.close();
  await expectIn(a, 'A', `no leave notice for ${userB}`, (u) =>
    [...document.querySelectorAll('#messages .sys[data-event="leave"]')].some((e) => e.dataset.user === u), userB);
  log('tab A saw the leave notice of tab B');

  const errs = await a.$$eval('#messages .err', (els) => els.map((e) => e.textContent));
  if (errs.length) throw new Error(`tab A shows error notices: ${errs.join(' | ')}`);
  if (pageErrors.length) throw new Error(`page script errors: ${pageErrors.join(' | ')}`);
  return { userA, userB, room };
}

let failed = null;
let summary = null;
const overall = setTimeout(() => {
  console.error(`FAIL two_tabs: overall timeout of ${OVERALL_MS / 1000} s`);
  try { gateway?.kill('SIGTERM'); } catch {}
  process.exit(1);
}, OVERALL_MS + 15_000); // hard stop, beyond the soft deadline below
overall.unref();

try {
  summary = await Promise.race([
    run(),
    sleep(OVERALL_MS).then(() => { throw new Error(`overall timeout of ${OVERALL_MS / 1000} s`); }),
  ]);
} catch (e) {
  failed = e.message || String(e);
}
if (failed && gatewayExit && !/^(cannot start|gateway exited)/.test(failed)) {
  failed += ` [the gateway had exited: code ${gatewayExit.code}, signal ${gatewayExit.signal}` +
    `${gatewayExit.error ? ', ' + gatewayExit.error : ''}]`;
}
let stopped = null;
try {
  stopped = await cleanup();
} catch (e) {
  failed = failed || e.message;
}
if (stopped && !failed) {
  if (stopped.code !== 0) {
    failed = `gateway exited with code ${stopped.code}, signal ${stopped.signal} after SIGTERM (expected 0)`;
  } else if (/AddressSanitizer|LeakSanitizer|runtime error/.test(gatewayOut)) {
    failed = 'the gateway printed a sanitizer report';
  } else {
    log('gateway stopped with exit code 0');
  }
}

if (failed) {
  if (frames.length) console.error('--- recent WebSocket frames ---\n' + frames.join('\n'));
  if (pageErrors.length) console.error('--- page errors ---\n' + pageErrors.join('\n'));
  if (gatewayOut) console.error('--- gateway output (tail) ---\n' + gatewayOut.trimEnd());
  console.log(`FAIL two_tabs: ${failed}`);
  process.exit(1);
}
console.log(`PASS two_tabs: ${summary.userA} -> ${summary.userB} in room ${summary.room}: join, typing, ` +
  `message, ack, reply, leave (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
process.exit(0);
