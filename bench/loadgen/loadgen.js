'use strict';
// Load generator for bench/run.py. One parent process forks worker processes (so the client
// side is not limited to one core) and prints one JSON result on stdout.
//
//   node loadgen.js echo|broadcast|idle|longpoll|http '<json config>'
//
// Latencies are kept as histograms keyed by microseconds rounded to 3 significant digits.
// process.hrtime is CLOCK_MONOTONIC, the same clock in every process, so a timestamp taken
// by the sender can be compared with the receive time in another worker.

const { fork } = require('child_process');
const http = require('http');
const readline = require('readline');
const WebSocket = require('ws');

const nowNs = () => process.hrtime.bigint();
const usSince = (t0) => Number(nowNs() - t0) / 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Histogram {
  constructor() { this.counts = new Map(); }
  add(us) {
    const key = us < 1 ? 1 : Number(us.toPrecision(3));
    this.counts.set(key, (this.counts.get(key) || 0) + 1);
  }
  toJSON() { return Object.fromEntries(this.counts); }
}

function mergeHistograms(hists) {
  const merged = {};
  for (const h of hists) {
    for (const [k, v] of Object.entries(h || {})) merged[k] = (merged[k] || 0) + v;
  }
  return merged;
}

// ---- opening sockets -------------------------------------------------------------------

// cfg.deflate (the ws_echo_deflate workload): offer permessage-deflate and compress every
// message, however small, as browsers do.
let perMessageDeflate = false;

function openOne(url, localAddress, headers) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate, handshakeTimeout: 30000, localAddress, headers });
    let settled = false;
    ws.on('error', (err) => {
      if (!settled) { settled = true; resolve({ ws: null, error: String(err.message || err) }); }
    });
    ws.once('open', () => { settled = true; resolve({ ws, error: null }); });
  });
}

// A refused handshake (e.g. 503 when the server sheds load) is retried like a browser's
// reconnect would, up to `attempts` tries with a growing pause; retries are counted.
async function openMany(url, n, concurrency, addresses, offset, attempts = 1) {
  const sockets = [];
  let failed = 0;
  let retries = 0;
  let firstError = null;
  let next = 0;
  async function lane() {
    while (next < n) {
      const i = next++;
      const address = addresses && addresses.length ? addresses[(i + offset) % addresses.length] : undefined;
      for (let attempt = 1; ; attempt++) {
        const { ws, error } = await openOne(url, address);
        if (ws) { sockets.push(ws); break; }
        firstError = firstError || error;
        if (attempt >= attempts) { failed++; break; }
        retries++;
        await sleep(Math.min(1000, 50 * attempt));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, lane));
  return { sockets, failed, retries, firstError };
}

function closeAll(sockets) {
  for (const ws of sockets) {
    try { ws.terminate(); } catch (e) { /* already gone */ }
  }
}

// ---- parent side -----------------------------------------------------------------------

function startWorkers(mode, cfg, total) {
  const n = Math.max(1, Math.min(cfg.workers || 1, total));
  const workers = [];
  for (let i = 0; i < n; i++) {
    const share = Math.floor(total / n) + (i < total % n ? 1 : 0);
    const offset = i * Math.floor(total / n) + Math.min(i, total % n);
    const w = fork(__filename, ['worker', JSON.stringify({ ...cfg, mode, index: i, share, offset })]);
    w.on('exit', (code) => { w.exited = code; });
    workers.push(w);
  }
  return workers;
}

function gather(workers, type) {
  return Promise.all(workers.map((w) => new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m.type === type) { w.off('message', onMessage); resolve(m); }
      if (m.type === 'fatal') reject(new Error('load generator worker failed: ' + m.error));
    };
    w.on('message', onMessage);
    w.once('exit', (code) => reject(new Error(`load generator worker exited (${code}) before "${type}"`)));
  })));
}

function broadcastTo(workers, message) {
  for (const w of workers) if (w.exited === undefined) w.send(message);
}

function openSummary(opens) {
  return {
    opened: opens.reduce((a, o) => a + o.opened, 0),
    failed: opens.reduce((a, o) => a + o.failed, 0),
    retries: opens.reduce((a, o) => a + (o.retries || 0), 0),
    first_error: (opens.find((o) => o.firstError) || {}).firstError || null,
  };
}

function finish(result, workers) {
  for (const w of workers) if (w.exited === undefined) w.kill('SIGKILL');
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

async function closedLoopParent(mode, cfg) {
  const workers = startWorkers(mode, cfg, cfg.connections);
  const opens = openSummary(await gather(workers, 'open'));
  broadcastTo(workers, { type: 'start' });
  await sleep((cfg.warmup_s || 0) * 1000);
  broadcastTo(workers, { type: 'measure' });
  const t0 = nowNs();
  await sleep(cfg.duration_s * 1000);
  const pending = gather(workers, 'result');
  broadcastTo(workers, { type: 'stop' });
  const results = await pending;
  const seconds = Number(nowNs() - t0) / 1e9;
  finish({
    ...opens,
    seconds,
    count: results.reduce((a, r) => a + r.count, 0),
    errors: results.reduce((a, r) => a + r.errors, 0),
    wrong_reply: (results.find((r) => r.wrongReply) || {}).wrongReply || null,
    statuses: mergeHistograms(results.map((r) => r.statuses)),
    hist: mergeHistograms(results.map((r) => r.hist)),
  }, workers);
}

async function waitForDeliveries(workers, expected, deadlineNs, quietMs) {
  const delivered = new Array(workers.length).fill(0);
  let lastChange = Date.now();
  workers.forEach((w, i) => w.on('message', (m) => {
    if (m.type === 'progress' && m.delivered !== delivered[i]) { delivered[i] = m.delivered; lastChange = Date.now(); }
  }));
  for (;;) {
    const total = delivered.reduce((a, b) => a + b, 0);
    if (total >= expected || nowNs() > deadlineNs || Date.now() - lastChange > quietMs) return total;
    await sleep(20);
  }
}

async function broadcastParent(cfg) {
  const started = nowNs();
  const workers = startWorkers('broadcast', cfg, cfg.connections);
  const opens = openSummary(await gather(workers, 'open'));
  const openSeconds = Number(nowNs() - started) / 1e9;
  const { ws: sender, error } = await openOne(cfg.send_url);
  if (!sender) throw new Error('the broadcast sender could not connect: ' + error);
  const expected = opens.opened * cfg.messages;
  const t0 = nowNs();
  for (let i = 0; i < cfg.messages; i++) {
    sender.send(`${i} ${nowNs()}`);
    if (cfg.send_interval_ms) await sleep(cfg.send_interval_ms);
  }
  const deadline = t0 + BigInt(Math.round(cfg.deadline_s * 1e9));
  await waitForDeliveries(workers, expected, deadline, (cfg.quiet_s || 3) * 1000);
  const pending = gather(workers, 'result');
  broadcastTo(workers, { type: 'stop' });
  const results = await pending;
  const delivered = results.reduce((a, r) => a + r.delivered, 0);
  const lastNs = results.reduce((a, r) => (r.last_ns && BigInt(r.last_ns) > a ? BigInt(r.last_ns) : a), t0);
  sender.terminate();
  finish({
    ...opens,
    open_seconds: openSeconds,
    expected,
    delivered,
    lost: expected - delivered,
    seconds: Number(lastNs - t0) / 1e9,
    hist: mergeHistograms(results.map((r) => r.hist)),
  }, workers);
}

async function idleParent(cfg) {
  const t0 = nowNs();
  const workers = startWorkers('idle', cfg, cfg.connections);
  const opens = openSummary(await gather(workers, 'open'));
  const openSeconds = Number(nowNs() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ event: 'open', open_seconds: openSeconds, ...opens }) + '\n');
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once('line', resolve));
  const pending = gather(workers, 'result');
  broadcastTo(workers, { type: 'stop' });
  const results = await pending;
  finish({
    ...opens,
    open_seconds: openSeconds,
    still_open: results.reduce((a, r) => a + r.still_open, 0),
  }, workers);
}

function httpGetText(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(10000, () => req.destroy(new Error('timed out: ' + url)));
    req.on('error', reject);
  });
}

async function longpollParent(cfg) {
  const t0 = nowNs();
  const workers = startWorkers('longpoll', cfg, cfg.requests);
  const sent = await gather(workers, 'sent');
  const deadline = t0 + BigInt(Math.round(cfg.deadline_s * 1e9));
  let parked = 0;
  while (parked < cfg.requests && nowNs() < deadline) {
    const { body } = await httpGetText(cfg.count_url);
    parked = parseInt(body, 10) || 0;
    if (parked < cfg.requests) await sleep(20);
  }
  const parkSeconds = Number(nowNs() - t0) / 1e9;
  const fireNs = nowNs();
  const fired = await httpGetText(cfg.fire_url);
  await waitForDeliveries(workers, cfg.requests, fireNs + BigInt(Math.round(cfg.deadline_s * 1e9)), (cfg.quiet_s || 3) * 1000);
  const pending = gather(workers, 'result');
  broadcastTo(workers, { type: 'stop' });
  const results = await pending;
  const hist = new Histogram();
  let lastNs = fireNs;
  let answered = 0;
  for (const r of results) {
    for (const t of r.answered_ns) {
      const ns = BigInt(t);
      if (ns < fireNs) continue;
      answered++;
      hist.add(Number(ns - fireNs) / 1000);
      if (ns > lastNs) lastNs = ns;
    }
  }
  finish({
    sent: sent.reduce((a, s) => a + s.sent, 0),
    parked_seen: parked,
    park_seconds: parkSeconds,
    fire_status: fired.status,
    answered,
    lost: cfg.requests - answered,
    errors: results.reduce((a, r) => a + r.errors, 0),
    retries: results.reduce((a, r) => a + r.retries, 0),
    early: results.reduce((a, r) => a + r.answered_ns.filter((t) => BigInt(t) < fireNs).length, 0),
    first_error: (results.find((r) => r.first_error) || {}).first_error || null,
    statuses: mergeHistograms(results.map((r) => r.statuses)),
    seconds: Number(lastNs - fireNs) / 1e9,
    hist: hist.toJSON(),
  }, workers);
}

// ---- worker side -----------------------------------------------------------------------

function onParent(handlers) {
  process.on('message', (m) => { if (handlers[m.type]) handlers[m.type](m); });
  process.on('disconnect', () => process.exit(0));
}

// With cfg.logins ([{cookie, username}]), socket k of the run sends logins[k].cookie and
// must be answered with logins[k].username (ws_echo_auth); any other answer is an error.
async function echoWorker(cfg) {
  const payload = 'x'.repeat(cfg.payload || 32);
  const logins = cfg.logins || null;
  let sockets = [];
  let failed = 0;
  let firstError = null;
  if (logins) {
    for (let i = 0; i < cfg.share; i++) {
      const login = logins[(cfg.offset + i) % logins.length];
      const { ws, error } = await openOne(cfg.url, undefined, { Cookie: login.cookie });
      if (ws) { ws.expected = login.username; sockets.push(ws); } else { failed++; firstError = firstError || error; }
    }
  } else {
    ({ sockets, failed, firstError } = await openMany(cfg.url, cfg.share, cfg.open_concurrency || 50, null, 0));
  }
  const hist = new Histogram();
  let measuring = false;
  let stopped = false;
  let count = 0;
  let errors = 0;
  let wrongReply = null;
  const loop = (ws) => {
    let t0 = nowNs();
    ws.on('message', (data) => {
      if (ws.expected !== undefined && String(data) !== ws.expected) {
        errors++;
        wrongReply = wrongReply || `expected ${JSON.stringify(ws.expected)}, got ${JSON.stringify(String(data))}`;
      }
      if (measuring) { count++; hist.add(usSince(t0)); }
      // cfg.pause_ms (the delay workload): each socket waits that long between messages.
      const next = () => { if (!stopped) { t0 = nowNs(); ws.send(payload); } };
      if (cfg.pause_ms) setTimeout(next, cfg.pause_ms); else next();
    });
    ws.on('close', () => { if (!stopped) errors++; });
    ws.send(payload);
  };
  onParent({
    start: () => sockets.forEach(loop),
    measure: () => { measuring = true; },
    stop: () => {
      measuring = false;
      stopped = true;
      process.send({ type: 'result', count, errors, wrongReply, hist: hist.toJSON() }, () => { closeAll(sockets); process.exit(0); });
    },
  });
  process.send({ type: 'open', opened: sockets.length, failed, firstError });
}

async function httpWorker(cfg) {
  const url = new URL(cfg.url);
  const hist = new Histogram();
  const statuses = {};
  let measuring = false;
  let stopped = false;
  let count = 0;
  let errors = 0;
  const loop = () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const once = () => {
      if (stopped) return;
      const t0 = nowNs();
      const req = http.get({ host: url.hostname, port: url.port, path: url.pathname + url.search, agent }, (res) => {
        res.resume();
        res.on('end', () => {
          if (measuring) { count++; hist.add(usSince(t0)); statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1; }
          once();
        });
      });
      req.on('error', () => { errors++; setTimeout(once, 10); });
    };
    once();
  };
  onParent({
    start: () => { for (let i = 0; i < cfg.share; i++) loop(); },
    measure: () => { measuring = true; },
    stop: () => {
      measuring = false;
      stopped = true;
      process.send({ type: 'result', count, errors, statuses, hist: hist.toJSON() }, () => process.exit(0));
    },
  });
  process.send({ type: 'open', opened: cfg.share, failed: 0, firstError: null });
}

async function broadcastWorker(cfg) {
  const url = cfg.urls ? cfg.urls[cfg.index % cfg.urls.length] : cfg.url;
  const { sockets, failed, retries, firstError } = await openMany(url, cfg.share, cfg.open_concurrency || 50, cfg.local_addresses, cfg.index, cfg.open_attempts || 1);
  const hist = new Histogram();
  let delivered = 0;
  let lastNs = null;
  for (const ws of sockets) {
    ws.on('message', (data) => {
      const now = nowNs();
      const text = data.toString();
      const sent = BigInt(text.slice(text.indexOf(' ') + 1));
      delivered++;
      lastNs = now;
      hist.add(Number(now - sent) / 1000);
    });
  }
  const progress = setInterval(() => process.send({ type: 'progress', delivered }), 50);
  onParent({
    stop: () => {
      clearInterval(progress);
      process.send({ type: 'result', delivered, last_ns: lastNs && lastNs.toString(), hist: hist.toJSON() }, () => { closeAll(sockets); process.exit(0); });
    },
  });
  process.send({ type: 'open', opened: sockets.length, failed, retries, firstError });
}

async function idleWorker(cfg) {
  const { sockets, failed, retries, firstError } = await openMany(cfg.url, cfg.share, cfg.open_concurrency || 50, cfg.local_addresses, cfg.index, cfg.open_attempts || 1);
  onParent({
    stop: () => {
      const stillOpen = sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length;
      process.send({ type: 'result', still_open: stillOpen }, () => { closeAll(sockets); process.exit(0); });
    },
  });
  process.send({ type: 'open', opened: sockets.length, failed, retries, firstError });
}

async function longpollWorker(cfg) {
  const url = new URL(cfg.url);
  const answered = [];
  const statuses = {};
  const requests = [];
  const attempts = cfg.open_attempts || 1;
  let errors = 0;
  let retries = 0;
  let firstError = null;
  let written = 0;
  let allWritten;
  const addresses = cfg.local_addresses || [];
  // A 503 (the server shedding a burst) is retried like a long-poll client would; the
  // request counts as parked once the server holds it without answering.
  const park = (i, attempt) => {
    const localAddress = addresses.length ? addresses[(i + cfg.index) % addresses.length] : undefined;
    const req = http.get({ host: url.hostname, port: url.port, path: url.pathname, agent: false, localAddress }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 503 && attempt < attempts) {
          retries++;
          setTimeout(() => park(i, attempt + 1), Math.min(1000, 50 * attempt));
          return;
        }
        statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
        if (res.statusCode === 200) answered.push(nowNs().toString());
      });
    });
    req.on('error', (err) => { errors++; firstError = firstError || String(err.message || err); });
    if (attempt === 1) req.on('finish', () => { if (++written === cfg.share) allWritten(); });
    requests.push(req);
  };
  await new Promise((resolve) => {
    allWritten = resolve;
    for (let i = 0; i < cfg.share; i++) park(i, 1);
  });
  const progress = setInterval(() => process.send({ type: 'progress', delivered: answered.length }), 50);
  onParent({
    stop: () => {
      clearInterval(progress);
      process.send({ type: 'result', answered_ns: answered, statuses, errors, retries, first_error: firstError }, () => {
        for (const req of requests) req.destroy();
        process.exit(0);
      });
    },
  });
  process.send({ type: 'sent', sent: written });
}

// ---- entry -----------------------------------------------------------------------------

const workerModes = { echo: echoWorker, http: httpWorker, broadcast: broadcastWorker, idle: idleWorker, longpoll: longpollWorker };
const parentModes = {
  echo: (cfg) => closedLoopParent('echo', cfg),
  http: (cfg) => closedLoopParent('http', cfg),
  broadcast: broadcastParent,
  idle: idleParent,
  longpoll: longpollParent,
};

function main() {
  const [mode, cfgJson] = process.argv.slice(2);
  if (mode === 'worker') {
    const cfg = JSON.parse(cfgJson);
    if (cfg.deflate) perMessageDeflate = { threshold: 0 };
    workerModes[cfg.mode](cfg).catch((err) => { process.send({ type: 'fatal', error: String(err.stack || err) }); process.exit(1); });
    return;
  }
  if (!parentModes[mode]) {
    process.stderr.write(`usage: node loadgen.js ${Object.keys(parentModes).join('|')} '<json config>'\n`);
    process.exit(2);
  }
  parentModes[mode](JSON.parse(cfgJson || '{}')).catch((err) => {
    process.stderr.write(String(err.stack || err) + '\n');
    process.exit(1);
  });
}

main();
