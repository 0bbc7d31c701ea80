#!/usr/bin/env node
// One load-generator worker: opens `count` WebSocket clients and measures what
// they receive. bench/fanout.py starts a few of these (one per core or so) and
// drives them over stdin/stdout, one JSON object per line.
//
// argv[2] is a JSON object:
//   base          "ws://127.0.0.1:8000"
//   paths         ["/api/v1/ws/prices/btc-usdc-perp", ...]; client i uses paths[i % paths.length]
//   first         global index of this worker's first client (stall selection is global)
//   count         clients in this worker
//   concurrency   handshakes in flight at once
//   deflate       offer permessage-deflate, as browsers do
//   measureType   the message type whose latency is measured ("price_update")
//
// Commands (stdin):           Events (stdout):
//   {"cmd":"reset"}             {"event":"ready"} once every client connected or gave up
//   {"cmd":"give_up"}           {"event":"ready"} at once: handshakes still pending are abandoned
//                               {"event":"progress","connected":n,"failed":m} every 2 s until ready
//   {"cmd":"report"}            {"event":"report", ...} the window since the last reset
//   {"cmd":"stall","every":10}  {"event":"stalled","count":n}  client i stops reading if i % every == 0
//   {"cmd":"unstall","wait_ms"} {"event":"unstalled",...}      resumes them; counts those the server had cut
//   {"cmd":"quit"}              exits after closing every client
//
// Latency is arrival time (epoch ms, sub-millisecond) minus the message's `ts`
// (the server's publish time, epoch ms), kept as a histogram of 1 ms buckets
// so that ten thousand clients cost a fixed-size array, not a list of samples.
'use strict';

const readline = require('readline');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const HISTOGRAM_MS = 120000; // last bucket collects everything slower
const RETRIES = 2;
const HANDSHAKE_TIMEOUT_MS = 30000;

const cfg = JSON.parse(process.argv[2]);
const measureType = cfg.measureType || 'price_update';

function nowMs() {
  return performance.timeOrigin + performance.now();
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function freshWindow() {
  return {
    startedAt: nowMs(),
    measured: 0, // messages of measureType from healthy clients
    other: {}, // count by type of everything else
    hist: new Uint32Array(HISTOGRAM_MS + 1),
    latencySum: 0,
    seqGaps: 0, // messages missing according to seq
    seqGapEvents: 0,
    seqBackwards: 0, // repeated or decreasing seq
    conflated: 0, // skips the server declared with `conflated`
    maxInterArrival: 0, // longest silence between two measured messages of one client
    lateArrivals: 0, // inter-arrival over lateAfterMs
    resyncs: 0,
    resyncFirst: null,
    resyncLast: null,
    closes: {}, // close code -> count, healthy clients only
    errors: 0,
    pings: 0, // WebSocket pings from the server (answered automatically by ws)
    stalledMessages: 0, // delivered to a stalled client before its pause took effect
    sample: null, // one raw measured message, for the reference servers
  };
}

let win = freshWindow();
let abandoned = false; // the harness stopped waiting for the remaining handshakes
const pending = new Set(); // sockets still in their handshake
const lateAfterMs = cfg.lateAfterMs || 2000;

class Client {
  constructor(index, url) {
    this.index = index;
    this.url = url;
    this.ws = null;
    this.lastSeq = 0;
    this.lastArrival = 0;
    this.open = false;
    this.stalled = false;
    this.closedAt = null;
    this.closeCode = null;
  }

  connect() {
    return new Promise((resolve) => {
      let attempts = 0;
      const attempt = () => {
        if (abandoned) {
          resolve(false);
          return;
        }
        attempts += 1;
        const ws = new WebSocket(this.url, {
          perMessageDeflate: cfg.deflate === true,
          handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        });
        pending.add(ws);
        let opened = false;
        ws.on('open', () => {
          pending.delete(ws);
          if (abandoned) {
            ws.terminate();
            return;
          }
          opened = true;
          this.open = true;
          this.ws = ws;
          resolve(true);
        });
        ws.on('message', (data) => this.onMessage(data));
        ws.on('ping', () => {
          win.pings += 1;
        });
        ws.on('error', () => {
          if (opened) win.errors += 1;
        });
        ws.on('close', (code) => {
          pending.delete(ws);
          if (!opened) {
            if (attempts < RETRIES && !abandoned) setTimeout(attempt, 200 * attempts);
            else resolve(false);
            return;
          }
          this.open = false;
          this.closedAt = nowMs();
          this.closeCode = code;
          if (!this.stalled) win.closes[code] = (win.closes[code] || 0) + 1;
        });
      };
      attempt();
    });
  }

  onMessage(data) {
    const arrival = nowMs();
    if (this.stalled) {
      win.stalledMessages += 1;
      return;
    }
    const text = data.toString();
    const msg = JSON.parse(text);
    const seq = msg.seq;
    if (typeof seq === 'number') {
      if (this.lastSeq !== 0) {
        if (seq > this.lastSeq + 1) {
          win.seqGaps += seq - this.lastSeq - 1;
          win.seqGapEvents += 1;
        } else if (seq <= this.lastSeq) {
          win.seqBackwards += 1;
        }
      }
      this.lastSeq = seq;
    }
    if (msg.conflated) win.conflated += msg.conflated;
    if (msg.type !== measureType) {
      win.other[msg.type] = (win.other[msg.type] || 0) + 1;
      if (msg.type === 'resync') {
        win.resyncs += 1;
        if (win.resyncFirst === null || arrival < win.resyncFirst) win.resyncFirst = arrival;
        if (win.resyncLast === null || arrival > win.resyncLast) win.resyncLast = arrival;
      }
      return;
    }
    win.measured += 1;
    if (win.sample === null) win.sample = text;
    const latency = Math.max(0, arrival - msg.ts);
    win.latencySum += latency;
    win.hist[Math.min(HISTOGRAM_MS, Math.floor(latency))] += 1;
    if (this.lastArrival !== 0 && this.lastArrival >= win.startedAt) {
      const gap = arrival - this.lastArrival;
      if (gap > win.maxInterArrival) win.maxInterArrival = gap;
      if (gap > lateAfterMs) win.lateArrivals += 1;
    }
    this.lastArrival = arrival;
  }
}

const clients = [];
for (let i = 0; i < cfg.count; i += 1) {
  const index = cfg.first + i;
  clients.push(new Client(index, cfg.base + cfg.paths[index % cfg.paths.length]));
}

let connected = 0;
let failed = 0;
let readySent = false;

function sendReady(started) {
  if (readySent) return;
  readySent = true;
  emit({ event: 'ready', connected, failed, ms: nowMs() - started });
}

async function connectAll() {
  const started = nowMs();
  const progress = setInterval(() => {
    if (!readySent) emit({ event: 'progress', connected, failed });
  }, 2000);
  giveUp = () => {
    abandoned = true;
    for (const ws of pending) ws.terminate();
    sendReady(started);
  };
  let next = 0;
  const lane = async () => {
    while (next < clients.length && !abandoned) {
      const client = clients[next];
      next += 1;
      if (await client.connect()) connected += 1;
      else failed += 1;
    }
  };
  const lanes = [];
  for (let i = 0; i < Math.max(1, cfg.concurrency); i += 1) lanes.push(lane());
  await Promise.all(lanes);
  clearInterval(progress);
  sendReady(started);
}

let giveUp = () => {};

function report() {
  const sparse = {};
  win.hist.forEach((count, bucket) => {
    if (count) sparse[bucket] = count;
  });
  let open = 0;
  let stalledOpen = 0;
  for (const client of clients) {
    if (client.open && !client.stalled) open += 1;
    if (client.open && client.stalled) stalledOpen += 1;
  }
  emit({
    event: 'report',
    window_ms: nowMs() - win.startedAt,
    measured: win.measured,
    other: win.other,
    histogram: sparse,
    latency_sum_ms: win.latencySum,
    seq_gaps: win.seqGaps,
    seq_gap_events: win.seqGapEvents,
    seq_backwards: win.seqBackwards,
    conflated: win.conflated,
    max_inter_arrival_ms: win.maxInterArrival,
    late_arrivals: win.lateArrivals,
    resyncs: win.resyncs,
    resync_first: win.resyncFirst,
    resync_last: win.resyncLast,
    closes: win.closes,
    errors: win.errors,
    pings: win.pings,
    stalled_messages: win.stalledMessages,
    open,
    stalled_open: stalledOpen,
    sample: win.sample,
  });
}

function stall(every) {
  let count = 0;
  for (const client of clients) {
    if (client.open && client.index % every === 0) {
      client.stalled = true;
      client.ws.pause();
      count += 1;
    }
  }
  emit({ event: 'stalled', count, at: nowMs() });
}

// A paused socket reads nothing, so it cannot see the server's RST; resuming
// lets it read the reset (or the data still buffered if it was never cut).
function unstall(waitMs) {
  const stalled = clients.filter((c) => c.stalled);
  for (const client of stalled) {
    if (client.ws) client.ws.resume();
  }
  setTimeout(() => {
    let cut = 0;
    let stillOpen = 0;
    for (const client of stalled) {
      if (client.open) stillOpen += 1;
      else cut += 1;
    }
    emit({ event: 'unstalled', stalled: stalled.length, cut, still_open: stillOpen });
  }, waitMs);
}

function quit() {
  for (const client of clients) {
    if (client.ws) client.ws.terminate();
  }
  setTimeout(() => process.exit(0), 100);
}

const commands = readline.createInterface({ input: process.stdin });
commands.on('line', (line) => {
  const command = JSON.parse(line);
  switch (command.cmd) {
    case 'reset':
      win = freshWindow();
      emit({ event: 'reset' });
      break;
    case 'report':
      report();
      break;
    case 'stall':
      stall(command.every);
      break;
    case 'unstall':
      unstall(command.wait_ms || 3000);
      break;
    case 'give_up':
      giveUp();
      break;
    case 'quit':
      quit();
      break;
    default:
      emit({ event: 'error', message: `unknown command ${command.cmd}` });
  }
});
commands.on('close', quit); // the harness went away: do not linger

connectAll();
