#!/usr/bin/env node
// One load-generator worker: opens `count` WebSocket clients and measures what
// they receive. bench/fanout.py and bench/resume_storm.py start a few of these
// (one per core or so) and drive them over stdin/stdout, one JSON object per line.
//
// argv[2] is a JSON object:
//   base          "ws://127.0.0.1:8000"
//   paths         ["/api/v1/ws/prices/btc-usdc-perp", ...]; client i uses paths[i % paths.length]
//   first         global index of this worker's first client (stall selection is global)
//   count         clients in this worker
//   concurrency   handshakes in flight at once
//   deflate       offer permessage-deflate, as browsers do
//   measureType   the message type whose latency is measured ("price_update");
//                 "*": every frame of a stream (every message with an `offset`)
//   snapshotTypes the stream types that are snapshots; a stream's other frames are events
//   witness       the first client of each path records the events it sees; it vouches for
//                 them from its first live frame (published after its `connected`) on
//
// Commands (stdin):           Events (stdout):
//   {"cmd":"reset"}             {"event":"ready"} once every client connected or gave up
//   {"cmd":"give_up"}           {"event":"ready"} at once: handshakes still pending are abandoned
//                               {"event":"progress","connected":n,"failed":m} every 2 s until ready
//   {"cmd":"report"}            {"event":"report", ...} the window since the last reset
//   {"cmd":"stall","every":10}  {"event":"stalled","count":n}  client i stops reading if i % every == 0
//   {"cmd":"unstall","wait_ms"} {"event":"unstalled",...}      resumes them; counts those the server had cut
//   {"cmd":"witness"}           {"event":"witness","paths":{path:{events,first,last,open}}}
//                               each witness's events ([offset, type]); `first`: the offset it vouches from
//   {"cmd":"drop"}              {"event":"dropped","count":n}  every client resets its socket (RST, no
//                               close frame), keeping the epoch and offset of the last frame it got
//   {"cmd":"resume","timeout_ms","since"} {"event":"resumed",...}  the dropped clients reconnect all
//                               at once, with ?epoch=E&offset=N unless `since` is false; sent once
//                               each is live, failed, or at the timeout
//   {"cmd":"resume_report"}     {"event":"resume_report","clients":[...]} each resumed client's timeline
//   {"cmd":"quit"}              exits after closing every client
//
// A resumed client's timeline (ms after the resume command): socket open, `connected` (with
// `recovered`), the last catch-up frame (one published before its `connected`: replayed events,
// the snapshot, what was held while it started) and the first live frame (published after).
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
const snapshotTypes = new Set(cfg.snapshotTypes || []);
const witnessPaths = new Set(); // paths whose witness is chosen already

function isMeasured(msg) {
  return measureType === '*' ? typeof msg.offset === 'number' : msg.type === measureType;
}

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
    offsetBackwards: 0, // a stream frame at or below the offset of the one before
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
    this.epoch = null; // the stream's epoch and offset of the last frame received
    this.lastOffset = 0;
    this.connectedTs = null; // the `ts` of its last `connected`
    this.witness = null; // {events, first}: this client records its stream's events from offset `first`
    this.dropping = false; // reset on purpose: its close is not a disconnect
    this.since = null; // {epoch, offset} when dropped, where it resumes
    this.resume = null; // its Resume timeline once it reconnects
    this.attempts = 0; // handshakes tried by its last connect (one more after each failure or timeout)
  }

  connect(url = this.url) {
    return new Promise((resolve) => {
      let attempts = 0;
      const attempt = () => {
        if (abandoned) {
          resolve(false);
          return;
        }
        attempts += 1;
        this.attempts = attempts;
        const ws = new WebSocket(url, {
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
          if (this.resume !== null && !this.dropping) this.resume.closeCode = code;
          if (!this.stalled && !this.dropping) win.closes[code] = (win.closes[code] || 0) + 1;
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
    if (typeof msg.offset === 'number') this.onStreamFrame(msg, arrival);
    if (msg.type === 'connected') {
      this.connectedTs = msg.ts;
      if (this.resume !== null) this.resume.connected(msg, arrival);
    }
    if (msg.type === 'resync') {
      win.resyncs += 1;
      if (win.resyncFirst === null || arrival < win.resyncFirst) win.resyncFirst = arrival;
      if (win.resyncLast === null || arrival > win.resyncLast) win.resyncLast = arrival;
    }
    if (!isMeasured(msg)) {
      win.other[msg.type] = (win.other[msg.type] || 0) + 1;
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

  onStreamFrame(msg, arrival) {
    if (this.epoch === msg.epoch && msg.offset <= this.lastOffset) win.offsetBackwards += 1;
    this.epoch = msg.epoch;
    this.lastOffset = msg.offset;
    const event = !snapshotTypes.has(msg.type);
    if (this.witness !== null) {
      // Events published between the snapshot it starts with and its subscription never reach it.
      if (this.witness.first === 0 && msg.ts > this.connectedTs) this.witness.first = msg.offset;
      if (event) this.witness.events.push([msg.offset, msg.type]);
    }
    if (this.resume !== null) this.resume.frame(msg, arrival, event);
  }

  drop() {
    this.dropping = true;
    this.since = { epoch: this.epoch, offset: this.lastOffset };
    // ws has no public reset: its socket's resetAndDestroy sends RST, as a broken network would.
    const socket = this.ws._socket;
    if (socket && socket.resetAndDestroy) socket.resetAndDestroy();
    else this.ws.terminate();
  }

  async reconnect(startedAt, withSince) {
    this.resume = new Resume(this.since, startedAt);
    this.lastSeq = 0; // a new connection counts seq from 1
    if (!withSince) this.epoch = null; // nor does a plain one carry on from the offset it had
    const query = `?epoch=${encodeURIComponent(this.since.epoch)}&offset=${this.since.offset}`;
    const opened = await this.connect(withSince ? this.url + query : this.url);
    this.dropping = false;
    if (opened) this.resume.openAt = nowMs();
    else this.resume.failed = true;
  }
}

// What one client saw from the resume command on: when, and which events.
class Resume {
  constructor(since, startedAt) {
    this.since = since;
    this.startedAt = startedAt;
    this.openAt = null;
    this.connectedAt = null;
    this.connectedTs = null;
    this.recovered = null;
    this.caughtUpAt = null; // the last frame published before `connected`
    this.liveAt = null; // the first one published after
    this.liveOffset = null;
    this.catchup = 0; // frames before the first live one
    this.replayed = 0; // of which events
    this.events = []; // offsets of every event received since
    this.epochs = new Set();
    this.failed = false;
    this.closeCode = null;
  }

  connected(msg, arrival) {
    this.connectedAt = arrival;
    this.connectedTs = msg.ts;
    this.recovered = typeof msg.recovered === 'boolean' ? msg.recovered : null;
  }

  frame(msg, arrival, event) {
    this.epochs.add(msg.epoch);
    if (this.liveAt === null) {
      if (this.connectedTs !== null && msg.ts > this.connectedTs) {
        this.liveAt = arrival;
        this.liveOffset = msg.offset;
      } else {
        this.catchup += 1;
        this.caughtUpAt = arrival;
        if (event) this.replayed += 1;
      }
    }
    if (event) this.events.push(msg.offset);
  }

  get done() {
    return this.liveAt !== null || this.failed || this.closeCode !== null;
  }

  report(client) {
    const since = (at) => (at === null ? null : at - this.startedAt);
    return {
      path: client.url.slice(cfg.base.length),
      since: this.since,
      open_ms: since(this.openAt),
      connected_ms: since(this.connectedAt),
      recovered: this.recovered,
      caught_up_ms: since(this.caughtUpAt),
      live_ms: since(this.liveAt),
      live_offset: this.liveOffset,
      catchup_frames: this.catchup,
      replayed: this.replayed,
      events: this.events,
      last_offset: client.lastOffset,
      attempts: client.attempts,
      epochs: [...this.epochs],
      failed: this.failed,
      close_code: this.closeCode,
    };
  }
}

const clients = [];
for (let i = 0; i < cfg.count; i += 1) {
  const index = cfg.first + i;
  const path = cfg.paths[index % cfg.paths.length];
  const client = new Client(index, cfg.base + path);
  if (cfg.witness && !witnessPaths.has(path)) {
    witnessPaths.add(path);
    client.witness = { events: [], first: 0 };
  }
  clients.push(client);
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
    offset_backwards: win.offsetBackwards,
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

function witness() {
  const paths = {};
  for (const client of clients) {
    if (client.witness === null) continue;
    const { events, first } = client.witness;
    paths[client.url.slice(cfg.base.length)] = { events, first, last: client.lastOffset, open: client.open };
  }
  emit({ event: 'witness', paths });
}

function drop() {
  let count = 0;
  for (const client of clients) {
    if (client.open) {
      client.drop();
      count += 1;
    }
  }
  emit({ event: 'dropped', count, at: nowMs() });
}

// Every dropped client reconnects at once (no handshake lanes: a blip ends for all together).
function resume(timeoutMs, withSince) {
  const started = nowMs();
  const dropped = clients.filter((c) => c.since !== null);
  for (const client of dropped) client.reconnect(started, withSince);
  const check = setInterval(() => {
    const done = dropped.filter((c) => c.resume.done).length;
    if (done < dropped.length && nowMs() - started < timeoutMs) return;
    clearInterval(check);
    const live = dropped.filter((c) => c.resume.liveAt !== null).length;
    emit({ event: 'resumed', clients: dropped.length, live, ms: nowMs() - started });
  }, 20);
}

function resumeReport() {
  const resumed = clients.filter((c) => c.resume !== null).map((c) => c.resume.report(c));
  emit({ event: 'resume_report', clients: resumed });
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
    case 'witness':
      witness();
      break;
    case 'drop':
      drop();
      break;
    case 'resume':
      resume(command.timeout_ms || 60000, command.since !== false);
      break;
    case 'resume_report':
      resumeReport();
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
