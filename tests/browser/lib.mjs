// tests/browser/lib.mjs - what the browser tests share: a gateway (and redis-server) on a free
// loopback port that can be stopped and started again on the same port, headless Chromium through
// playwright-core, a record of each page's WebSockets and frames, bounded waits inside a page with
// the page's state in the failure message, HS256 tokens, and main(): one overall deadline,
// cleanup (every gateway must exit 0 on SIGTERM without a sanitizer report) and the one-line
// "PASS <name>: ..." / "FAIL <name>: ..." result printed last.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { chromium } from 'playwright-core';

export const STEP_MS = 8_000; // one wait inside a page
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const t0 = Date.now();
export const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const cleanups = []; // run in reverse order by main()
const gateways = []; // every Gateway made, checked at the end
const frames = []; // recent WebSocket traffic of all pages, for failure reports
const pageErrors = [];
let scratch = null;

export function workdir() {
  if (!scratch) {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-gw-browser-'));
    cleanups.push(() => fs.rmSync(scratch, { recursive: true, force: true }));
  }
  return scratch;
}

export function freePort() {
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

export function uniq(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

// One chat-gateway process at a time on a fixed port; start() again after stop() is a restart.
export class Gateway {
  constructor(binary, { nodeId = 'browser-test', args = [] } = {}) {
    this.binary = binary;
    this.nodeId = nodeId;
    this.args = args;
    this.port = null;
    this.proc = null;
    this.exit = null; // { code, signal[, error] } once the current process exited
    this.out = ''; // last part of its stdout+stderr (all runs)
    this.sanitizer = false;
    gateways.push(this);
  }

  get base() { return `http://127.0.0.1:${this.port}`; }

  spawn() {
    this.exit = null;
    // No CHAT_* variable from the caller's shell reaches the gateway (as in tests/integration).
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHAT_')));
    const p = spawn(this.binary, ['--listen', `127.0.0.1:${this.port}`, '--node-id', this.nodeId,
      '--admin-listen', '', '--drain-delay', '0', '--drain-timeout', '2s', ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'], cwd: workdir(), env,
    });
    const keep = (chunk) => {
      const s = chunk.toString();
      if (/AddressSanitizer|LeakSanitizer|runtime error/.test(s)) this.sanitizer = true;
      this.out = (this.out + s).slice(-6000);
    };
    p.stdout.on('data', keep);
    p.stderr.on('data', keep);
    p.on('exit', (code, signal) => { if (this.proc === p) this.exit = { code, signal }; });
    p.on('error', (e) => { if (this.proc === p) this.exit = { code: null, signal: null, error: e.message }; });
    this.proc = p;
  }

  async start() {
    // A port taken between freePort() and the bind is the one start-up failure worth another try
    // (only on the first start: a restart keeps its port).
    for (let attempt = 1; ; attempt++) {
      const fresh = this.port == null;
      if (fresh) this.port = await freePort();
      this.spawn();
      try {
        await this.waitListening(10_000);
        log(`gateway ${this.nodeId} pid ${this.proc.pid} listening on 127.0.0.1:${this.port}`);
        return this;
      } catch (e) {
        if (fresh && attempt < 3 && this.exit && /in use/i.test(this.out)) { this.port = null; continue; }
        throw e;
      }
    }
  }

  async waitListening(ms) {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      if (this.exit?.error) throw new Error(`cannot start the gateway ${this.binary}: ${this.exit.error}`);
      if (this.exit) {
        throw new Error(`gateway exited before listening (code ${this.exit.code}, signal ${this.exit.signal})`);
      }
      if (await canConnect(this.port)) return;
      await sleep(100);
    }
    throw new Error(`gateway did not accept connections on 127.0.0.1:${this.port} within ${ms / 1000} s`);
  }

  // SIGTERM (graceful drain), or another signal; returns { code, signal }. Throws when a SIGTERM
  // did not end it within 5 s or it did not exit 0.
  async stop(signal = 'SIGTERM') {
    const p = this.proc;
    if (!p) return null;
    if (!this.exit) {
      const exited = new Promise((r) => p.once('exit', (code, sig) => r({ code, signal: sig })));
      p.kill(signal);
      const res = await Promise.race([exited, sleep(5000).then(() => null)]);
      if (!res) {
        p.kill('SIGKILL');
        await Promise.race([exited, sleep(2000)]);
        this.proc = null;
        throw new Error(`gateway ${this.nodeId} did not exit within 5 s of ${signal} (killed with SIGKILL)`);
      }
    }
    const res = this.exit;
    this.proc = null;
    if (signal === 'SIGTERM' && res && res.code !== 0) {
      throw new Error(`gateway ${this.nodeId} exited with code ${res.code}, signal ${res.signal} after SIGTERM (expected 0)`);
    }
    return res;
  }
}

// A redis-server of our own on a free loopback port (no persistence unless asked).
export async function startRedis(extra = []) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(workdir(), 'redis-'));
  const p = spawn(process.env.REDIS_SERVER || 'redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let exit = null;
  p.stdout.on('data', (c) => { out = (out + c).slice(-3000); });
  p.stderr.on('data', (c) => { out = (out + c).slice(-3000); });
  p.on('exit', (code, signal) => { exit = { code, signal }; });
  p.on('error', (e) => { exit = { error: e.message }; });
  const until = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (exit) throw new Error(`redis-server did not start: ${JSON.stringify(exit)} ${out.slice(-500)}`);
    if (Date.now() > until) throw new Error('redis-server did not listen within 10 s');
    await sleep(100);
  }
  log(`redis-server pid ${p.pid} on 127.0.0.1:${port}`);
  const stop = async () => {
    if (exit) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    if (!(await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]))) p.kill('SIGKILL');
  };
  cleanups.push(stop);
  return { port, url: `redis://127.0.0.1:${port}`, stop };
}

// The response to a raw WebSocket upgrade: { status, body } (for checking a refusal's premise).
export function rawUpgrade(port, pathName, headers = []) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let data = '';
    s.setTimeout(5000, () => { s.destroy(); reject(new Error('raw upgrade: no answer within 5 s')); });
    s.on('error', reject);
    const done = () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      s.destroy();
      resolve({ status: m ? Number(m[1]) : null, body: data.split('\r\n\r\n').slice(1).join('\r\n\r\n') });
    };
    s.on('data', (c) => { data += c; if (/^HTTP\/1\.1 101 /.test(data) && data.includes('\r\n\r\n')) done(); });
    s.on('end', done);
    s.on('connect', () => {
      s.write([`GET ${pathName} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Upgrade: websocket',
        'Connection: Upgrade', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        ...headers, '', ''].join('\r\n'));
    });
  });
}

let browser = null;
export async function launch() {
  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, timeout: 20_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return browser;
}

async function closeBrowser() {
  const b = browser;
  browser = null;
  if (b) await Promise.race([b.close().catch(() => {}), sleep(5000)]);
}

// A new page (tab) in its own context, watched: rec.sockets is every WebSocket it opened (with
// .sent / .received: the parsed JSON frames, .closed), for counting connections and checking
// what went over the wire.
export async function openPage(name, url) {
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  const rec = { name, page, sockets: [] };
  page.on('pageerror', (e) => pageErrors.push(`tab ${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // the browser's own log lines of a refused handshake (in the frame record as "socket error")
    // or of the page's probe of a server that is down are network, not script errors
    if (/^WebSocket connection to .* failed|^Failed to load resource: net::/.test(m.text())) return;
    pageErrors.push(`tab ${name} console: ${m.text()}`);
  });
  page.on('websocket', (ws) => {
    const sock = { url: ws.url(), sent: [], received: [], closed: false };
    rec.sockets.push(sock);
    const note = (s) => {
      frames.push(`tab ${name} #${rec.sockets.indexOf(sock) + 1} ${s}`);
      if (frames.length > 60) frames.shift();
    };
    const parse = (p) => { try { return JSON.parse(String(p)); } catch { return { unparsed: String(p) }; } };
    note(`open ${ws.url()}`);
    ws.on('framesent', (f) => { sock.sent.push(parse(f.payload)); note(`-> ${String(f.payload).slice(0, 300)}`); });
    ws.on('framereceived', (f) => { sock.received.push(parse(f.payload)); note(`<- ${String(f.payload).slice(0, 300)}`); });
    ws.on('socketerror', (e) => note(`socket error ${e}`));
    ws.on('close', () => { sock.closed = true; note('closed'); });
  });
  rec.sent = () => rec.sockets.flatMap((s) => s.sent);
  rec.received = () => rec.sockets.flatMap((s) => s.received);
  if (url) await page.goto(url, { waitUntil: 'load' });
  return rec;
}

export async function pageState(page) {
  try {
    return await page.evaluate(() => {
      const q = (s) => document.querySelector(s);
      const view = q('#messages ol.log:not([hidden])');
      const items = view ? [...view.children].slice(-8).map((li) => {
        const d = Object.entries(li.dataset).map(([k, v]) => `${k}=${v}`).join(',');
        return `[${li.className}${d ? ' ' + d : ''}] ${li.textContent}`;
      }) : [];
      return JSON.stringify({
        status: q('#status')?.textContent, detail: q('#detail')?.textContent, me: q('#me')?.textContent,
        auth: q('#auth')?.hidden ? null : q('#auth-msg')?.textContent,
        rooms: [...document.querySelectorAll('#rooms > li')].map((li) =>
          `${li.dataset.room}(${li.dataset.state}${li.getAttribute('aria-current') === 'true' ? ',viewed' : ''},unread=${li.dataset.unread})`),
        view: view?.dataset.room, items, typing: q('#typing')?.textContent,
        people: [...document.querySelectorAll('#people > li')].map((li) => li.dataset.user),
        peopleNote: q('#people-note')?.textContent,
      });
    });
  } catch (e) {
    return `(page state unavailable: ${e.message})`;
  }
}

// Waits for fn(arg) to be truthy in the page; on timeout throws `what` plus the page's state.
export async function expectIn(tab, what, fn, arg, ms = STEP_MS) {
  try {
    return await tab.page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
  } catch (e) {
    throw new Error(`${what} (tab ${tab.name}, waited ${ms / 1000} s); tab ${tab.name} shows ${await pageState(tab.page)}`);
  }
}

// Waits for a Node-side condition (e.g. on recorded frames), bounded.
export async function until(what, fn, ms = STEP_MS) {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what} (waited ${ms / 1000} s)`);
    await sleep(100);
  }
}

export function connected(tab) {
  return expectIn(tab, 'page did not reach status "connected"',
    () => document.querySelector('#status')?.dataset.state === 'connected');
}

// The room r is joined (the server answered `joined` on the current connection).
export function joinedRoom(tab, r) {
  return expectIn(tab, `room ${r} not joined`, (room) =>
    document.querySelector(`#rooms > li[data-room="${CSS.escape(room)}"]`)?.dataset.state === 'joined', r);
}

// The chat messages shown in room r's log: [{ user, text, id, seq, state, mine, label }].
export function messagesIn(tab, r) {
  return tab.page.evaluate((room) => {
    const log = document.querySelector(`#messages ol.log[data-room="${CSS.escape(room)}"]`);
    return log ? [...log.querySelectorAll('.msg')].map((m) => ({
      user: m.dataset.user, text: m.querySelector('.text')?.textContent, id: m.dataset.id,
      seq: m.dataset.seq, state: m.dataset.state, cid: m.dataset.cid, mine: m.classList.contains('mine'),
      label: m.querySelector('.user')?.textContent,
    })) : null;
  }, r);
}

export function hasMessage(tab, r, text, what) {
  return expectIn(tab, what || `message "${text}" not shown in room ${r}`, ([room, t]) => {
    const log = document.querySelector(`#messages ol.log[data-room="${CSS.escape(room)}"]`);
    return log && [...log.querySelectorAll('.msg .text')].some((e) => e.textContent === t);
  }, [r, text]);
}

export async function say(tab, text) {
  await tab.page.fill('#text', text);
  await tab.page.click('#send');
}

export async function view(tab, r) {
  await tab.page.click(`#rooms > li[data-room="${r}"] .pick`);
  await expectIn(tab, `room ${r} not viewed after clicking it`, (room) =>
    document.querySelector('#messages ol.log:not([hidden])')?.dataset.room === room, r);
}

export async function joinViaForm(tab, r) {
  await tab.page.fill('#room', r);
  await tab.page.click('#join');
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

export function mintHS256(secret, claims, kid) {
  const header = { alg: 'HS256', typ: 'JWT', ...(kid ? { kid } : {}) };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(crypto.createHmac('sha256', secret).update(input).digest())}`;
}

function checkNoPageErrors() {
  if (pageErrors.length) throw new Error(`page script errors: ${pageErrors.join(' | ')}`);
}

// Runs fn(binary) under one deadline; prints the result line last; exits 0 or 1.
export async function main(name, fn, overallMs = 60_000) {
  if (!process.argv[2]) {
    console.error(`usage: node ${name}.mjs <path-to-chat-gateway-binary>`);
    process.exit(2);
  }
  const binary = path.resolve(process.argv[2]); // the gateways run in a scratch directory
  const hard = setTimeout(() => {
    console.log(`FAIL ${name}: overall timeout of ${overallMs / 1000} s (hard stop)`);
    for (const g of gateways) { try { g.proc?.kill('SIGKILL'); } catch {} }
    process.exit(1);
  }, overallMs + 20_000);
  hard.unref();
  let failed = null;
  let summary = null;
  try {
    summary = await Promise.race([
      fn(binary),
      sleep(overallMs).then(() => { throw new Error(`overall timeout of ${overallMs / 1000} s`); }),
    ]);
    checkNoPageErrors();
  } catch (e) {
    failed = e.message || String(e);
  }
  for (const g of gateways) {
    if (failed && g.exit && !/^(cannot start|gateway exited)/.test(failed)) {
      failed += ` [gateway ${g.nodeId} had exited: code ${g.exit.code}, signal ${g.exit.signal}${g.exit.error ? ', ' + g.exit.error : ''}]`;
    }
  }
  // Browser first (its connections close), then the gateways, then the rest.
  const order = [...cleanups].reverse();
  await closeBrowser();
  for (const g of gateways) {
    try {
      const res = await g.stop();
      if (res && !failed) log(`gateway ${g.nodeId} stopped with exit code 0`);
    } catch (e) {
      failed = failed || e.message;
    }
    if (g.sanitizer && !failed) failed = `gateway ${g.nodeId} printed a sanitizer report`;
  }
  for (const f of order) { try { await f(); } catch {} }
  if (failed) {
    if (frames.length) console.error('--- recent WebSocket frames ---\n' + frames.join('\n'));
    if (pageErrors.length) console.error('--- page errors ---\n' + pageErrors.join('\n'));
    for (const g of gateways) if (g.out) console.error(`--- gateway ${g.nodeId} output (tail) ---\n` + g.out.trimEnd());
    console.log(`FAIL ${name}: ${failed}`);
    process.exit(1);
  }
  console.log(`PASS ${name}: ${summary} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  process.exit(0);
}
