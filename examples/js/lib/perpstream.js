// A small reconnecting client for perpstream's multiplexed endpoint (/api/v1/ws),
// written against the public protocol only (docs/websocket.md).
//
// What it takes care of, so the examples stay about their own job:
// - reconnects with exponential backoff and full jitter, forever, except after
//   a close that says the request itself is wrong (1008, 4400, 4404);
// - remembers each stream's last (epoch, offset) and, after a reconnect,
//   resubscribes resuming from it (`since`): the server replays the events
//   missed meanwhile (`recovered: true`), or cannot (`recovered: false`: the
//   `missed` callback is told, and the fresh snapshot that follows replaces
//   all state; the `snapshot` callback says so with `fresh: true`);
// - drops a message whose offset is at or below the last one seen in the
//   same epoch: it has been handled already;
// - application-level heartbeats: a ping every `heartbeatMs`, and a connection
//   silent for two intervals is treated as dead (the `ws` package answers the
//   server's own WebSocket pings by itself);
// - per-subscription `seq` tracking: a gap resubscribes that stream (resuming),
//   a `resync` waits for the next snapshot.
// Exact decimals (wire strings) and chain-event de-duplication are helpers below.

import { WebSocket } from "ws";

// Close codes after which reconnecting cannot help.
export const FATAL_CLOSE_CODES = new Map([
  [1008, "policy violation (malformed input)"],
  [4400, "invalid parameter"],
  [4404, "unknown market"],
]);

// Errors answering a subscribe that no retry can fix.
export const REFUSED_CODES = new Set([
  "unknown_market",
  "invalid_address",
  "unknown_channel",
  "missing_parameter",
  "missing_channel",
]);

/** Exponential backoff with full jitter: a uniform draw from [0, min(max, initial * 2^attempt)]. */
export class Backoff {
  constructor({ initialMs = 500, maxMs = 30_000, random = Math.random } = {}) {
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.random = random;
    this.attempt = 0;
  }

  nextDelayMs() {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.floor(this.random() * ceiling);
  }

  reset() {
    this.attempt = 0;
  }
}

/**
 * Remembers chain events by (tx_hash, log_index). Events arrive `pending`, later
 * again as `final`, and after a reconnect possibly once more; a reorg sends
 * `position_reverted` with `finality: "reverted"`.
 * `see(message)` returns "new", "finalized" (first final copy of a known event),
 * "reverted", or "duplicate" (nothing to do).
 */
export class EventDeduper {
  constructor(capacity = 10_000) {
    this.capacity = capacity;
    this.seen = new Map(); // key -> finality, oldest first
  }

  see(message) {
    const key = `${message.event.tx_hash}:${message.event.log_index}`;
    const before = this.seen.get(key);
    const now = message.finality;
    let verdict;
    if (now === "reverted") verdict = before === "reverted" ? "duplicate" : "reverted";
    else if (before === undefined || before === "reverted") verdict = now === "final" ? "finalized" : "new";
    else if (before === "pending" && now === "final") verdict = "finalized";
    else verdict = "duplicate";
    if (verdict !== "duplicate") {
      this.seen.delete(key);
      this.seen.set(key, now);
      if (this.seen.size > this.capacity) this.seen.delete(this.seen.keys().next().value);
    }
    return verdict;
  }
}

const DECIMAL = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/;
const SCALE = 18;

/** A wire decimal ("-12.5") as an exact BigInt scaled by 10^18; never a float. */
export function toScaled(text) {
  if (typeof text !== "string" || !DECIMAL.test(text)) throw new TypeError(`not a plain decimal: ${text}`);
  const negative = text.startsWith("-");
  const [whole, fraction = ""] = (negative ? text.slice(1) : text).split(".");
  if (fraction.length > SCALE) throw new RangeError(`more than ${SCALE} decimals: ${text}`);
  const scaled = BigInt(whole + fraction.padEnd(SCALE, "0"));
  return negative ? -scaled : scaled;
}

/** -1, 0 or 1, comparing two wire decimals exactly. */
export function compareDecimal(a, b) {
  const x = toScaled(a);
  const y = toScaled(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * How acks name a subscription: "prices:btc-usdc-perp", "positions:0x…", "liquidations".
 * The key depends on the channel: position events carry a `market_id` too, but
 * their stream is the account's.
 */
export function subscriptionName(message) {
  if (message.channel === "positions") return `positions:${message.user_address}`;
  if (message.channel === "liquidations") return "liquidations";
  return `${message.channel}:${message.market_id}`;
}

const SNAPSHOTS = new Set(["price_update", "positions_update", "liquidation_alert", "market_stats"]);

/**
 * Multiplexed, reconnecting, resuming client.
 * handlers: { snapshot(message, {fresh}), event(message), missed(name), status(text), fatal(text) }
 * `missed(name)`: a resume did not recover, so events of that stream may have been missed.
 */
export class PerpStream {
  constructor(baseUrl, subscriptions, handlers, { heartbeatMs = 10_000, backoff = new Backoff() } = {}) {
    this.url = baseUrl.replace(/\/+$/, "") + "/api/v1/ws";
    this.subscriptions = subscriptions; // [{channel, market_id?, user_address?}]
    this.handlers = handlers;
    this.heartbeatMs = heartbeatMs;
    this.backoff = backoff;
    this.streams = new Map(); // subscription name -> {seq, fresh}
    this.requests = new Map(); // request id -> subscription, until acknowledged
    this.byName = new Map(); // subscription name (as the server spells it) -> subscription
    this.positions = new Map(); // subscription name -> {epoch, offset} of the last message received
    this.stopped = false;
    this.nextId = 1;
    this.socket = null;
    this.timers = [];
  }

  start() {
    this.stopped = false;
    this.#connect();
    return this;
  }

  stop() {
    this.stopped = true;
    this.#clearTimers();
    if (this.socket) this.socket.close(1000, "client done");
  }

  #status(text) {
    this.handlers.status?.(text);
  }

  #send(request) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(request));
  }

  /** Subscribe, resuming after the last message received on this stream, if any. */
  #subscribe(subscription) {
    const id = this.nextId++;
    this.requests.set(id, subscription);
    const name = [...this.byName].find(([, known]) => known === subscription)?.[0];
    const since = this.positions.get(name);
    if (since) this.#status(`resuming ${name} after offset ${since.offset} of epoch ${since.epoch}`);
    this.#send({ op: "subscribe", ...subscription, id, ...(since && { since }) });
  }

  /** Whether `message` was handled already (offset at or below the last of its epoch); else note it. */
  #repeat(name, message) {
    if (message.offset === undefined) return false;
    const last = this.positions.get(name);
    if (last && last.epoch === message.epoch && message.offset <= last.offset) return true;
    this.positions.set(name, { epoch: message.epoch, offset: message.offset });
    return false;
  }

  #clearTimers() {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }

  #connect() {
    this.#status(`connecting to ${this.url}`);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    let lastHeard = Date.now();
    this.streams.clear();
    this.requests.clear();

    socket.on("open", () => {
      this.#status("open; subscribing");
      for (const subscription of this.subscriptions) this.#subscribe(subscription);
      this.timers.push(
        setInterval(() => {
          if (Date.now() - lastHeard > 2 * this.heartbeatMs) {
            this.#status("no message for two heartbeat intervals; dropping the connection");
            socket.terminate();
            return;
          }
          this.#send({ op: "ping", id: this.nextId++ });
        }, this.heartbeatMs),
      );
    });

    socket.on("message", (data) => {
      lastHeard = Date.now();
      this.#handle(JSON.parse(data.toString()));
    });

    socket.on("error", (error) => this.#status(`socket error: ${error.message}`));

    socket.on("close", (code, reason) => {
      this.#clearTimers();
      if (this.stopped) return;
      const why = reason.toString() || FATAL_CLOSE_CODES.get(code) || "";
      if (FATAL_CLOSE_CODES.has(code)) {
        this.stopped = true;
        this.handlers.fatal?.(`closed ${code} ${why}: not reconnecting`);
        return;
      }
      const delay = this.backoff.nextDelayMs();
      this.#status(`disconnected (close ${code}${why ? " " + why : ""}); reconnecting in ${delay} ms`);
      this.timers.push(setTimeout(() => this.#connect(), delay));
    });
  }

  #handle(message) {
    const { type } = message;
    if (type === "subscribed") {
      // The server's spelling of the name (lower-case market, EIP-55 address).
      this.byName.set(message.subscription, this.requests.get(message.id));
      this.requests.delete(message.id);
      return;
    }
    if (type === "pong" || type === "unsubscribed") return;
    if (type === "error" && this.requests.has(message.id) && REFUSED_CODES.has(message.code)) {
      this.stop();
      this.handlers.fatal?.(`subscription refused: ${message.code} ${message.message}`);
      return;
    }
    if (type === "error" && this.requests.has(message.id) && message.code === "invalid_since") {
      // The server cannot use our resume position: subscribe to that stream afresh.
      const subscription = this.requests.get(message.id);
      this.requests.delete(message.id);
      for (const [name, known] of this.byName) if (known === subscription) this.positions.delete(name);
      this.#status(`cannot resume: ${message.message}; subscribing afresh`);
      this.#subscribe(subscription);
      return;
    }
    if (type === "error" || type === "goodbye") {
      this.#status(`${type}: ${message.code ?? message.reason}${message.message ? " " + message.message : ""}`);
      return;
    }
    const name = subscriptionName(message);
    if (type === "connected") {
      this.backoff.reset();
      const recovered = message.recovered === true;
      this.streams.set(name, { seq: message.seq, fresh: !recovered });
      if (recovered) {
        this.#status(`resumed ${name}: the missed events follow`);
      } else if (message.recovered === false) {
        // Another epoch, or history trimmed: start over from the next snapshot.
        this.positions.delete(name);
        this.#status(`subscribed ${name}; could not resume, events may have been missed`);
        this.handlers.missed?.(name);
      } else {
        this.#status(`subscribed ${name}`);
      }
      return;
    }
    const stream = this.streams.get(name);
    if (stream === undefined) return; // a late message of a dropped subscription
    if (message.seq !== stream.seq + 1) {
      this.#status(`${name}: seq ${stream.seq} -> ${message.seq}, messages lost; resubscribing`);
      const subscription = this.byName.get(name);
      this.streams.delete(name);
      this.#send({ op: "unsubscribe", ...subscription, id: this.nextId++ });
      this.#subscribe(subscription);
      return;
    }
    stream.seq = message.seq;
    if (this.#repeat(name, message)) {
      this.#status(`${name}: ${type} at offset ${message.offset} seen already; skipped`);
      return;
    }
    if (type === "resync") {
      stream.fresh = true;
      this.#status(`${name}: resync (${message.reason}); the next snapshot replaces all state`);
    } else if (SNAPSHOTS.has(type)) {
      this.handlers.snapshot?.(message, { fresh: stream.fresh });
      stream.fresh = false;
    } else {
      this.handlers.event?.(message);
    }
  }
}

/** Command-line options shared by the examples: positional args, then --name value pairs. */
export function parseArgs(argv, defaults) {
  const options = { ...defaults, positional: [] };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i].startsWith("--")) options[argv[i].slice(2)] = argv[++i];
    else options.positional.push(argv[i]);
  }
  return options;
}

/** Stop after `seconds` (0 or unset: run until Ctrl-C), then run `done`. */
export function runFor(seconds, done) {
  const stop = () => {
    done();
    setTimeout(() => process.exit(0), 200).unref();
  };
  if (Number(seconds) > 0) setTimeout(stop, Number(seconds) * 1000);
  process.on("SIGINT", stop);
}
