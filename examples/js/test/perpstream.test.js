// Unit tests of the examples' client library: `node --test test/`.
// The PerpStream tests run it against a scripted in-process WebSocket server.

import assert from "node:assert/strict";
import { once } from "node:events";
import { test } from "node:test";
import { WebSocketServer } from "ws";

import { Backoff, EventDeduper, PerpStream, compareDecimal, subscriptionName, toScaled } from "../lib/perpstream.js";

test("backoff grows exponentially, is capped, and draws uniformly below the ceiling", () => {
  const highest = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
  const ceilings = Array.from({ length: 6 }, () => highest.nextDelayMs() + 1);
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1000, 1000]);
  const lowest = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
  assert.equal(lowest.nextDelayMs(), 0); // full jitter reaches zero
  highest.reset();
  assert.equal(highest.nextDelayMs() + 1, 100);
});

test("events are new once, finalized once, and duplicates after that", () => {
  const events = new EventDeduper(2);
  const event = (tx, finality) => ({ event: { tx_hash: tx, log_index: 0 }, finality });
  assert.equal(events.see(event("0xa", "pending")), "new");
  assert.equal(events.see(event("0xa", "pending")), "duplicate"); // replayed after a reconnect
  assert.equal(events.see(event("0xa", "final")), "finalized");
  assert.equal(events.see(event("0xa", "final")), "duplicate");
  assert.equal(events.see(event("0xa", "reverted")), "reverted");
  assert.equal(events.see(event("0xb", "final")), "finalized"); // its pending copy came before we connected
  assert.equal(events.see(event("0xc", "pending")), "new"); // capacity 2: 0xa is forgotten
  assert.equal(events.see(event("0xa", "pending")), "new");
});

test("decimals compare exactly, beyond float precision", () => {
  assert.equal(compareDecimal("0.1", "0.10"), 0);
  assert.equal(compareDecimal("10000000000000000.000000000000000001", "10000000000000000"), 1);
  assert.equal(compareDecimal("-2.5", "-2.4"), -1);
  assert.equal(toScaled("-0.000000000000000001"), -1n);
  assert.throws(() => toScaled("6.5e4"), TypeError);
  assert.throws(() => toScaled(1.5), TypeError);
});

test("subscription names follow the server's", () => {
  assert.equal(subscriptionName({ channel: "prices", market_id: "btc-usdc-perp" }), "prices:btc-usdc-perp");
  assert.equal(subscriptionName({ channel: "liquidations" }), "liquidations");
  // A position event names its market, but belongs to the account's stream.
  const event = { channel: "positions", user_address: "0xAb", market_id: "btc-usdc-perp" };
  assert.equal(subscriptionName(event), "positions:0xAb");
});

/** A scripted server: `script(socket, request)` answers each client request. */
async function scriptedServer(script) {
  const server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await once(server, "listening");
  const requests = [];
  let connections = 0;
  server.on("connection", (socket) => {
    connections += 1;
    const connection = connections;
    socket.on("message", (data) => {
      const request = JSON.parse(data.toString());
      requests.push({ connection, ...request });
      script(socket, request, connection);
    });
  });
  return { url: `ws://127.0.0.1:${server.address().port}`, requests, close: () => server.close() };
}

function send(socket, message) {
  socket.send(JSON.stringify({ ts: Date.now(), channel: "prices", market_id: "btc-usdc-perp", ...message }));
}

function collect() {
  const seen = { snapshots: [], statuses: [], fatal: [] };
  const handlers = {
    snapshot: (m, { fresh }) => seen.snapshots.push({ seq: m.seq, price: m.price, fresh }),
    status: (text) => seen.statuses.push(text),
    fatal: (text) => seen.fatal.push(text),
  };
  return { seen, handlers };
}

async function until(predicate, timeoutMs = 3000) {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test("a seq gap resubscribes, a resync marks the next snapshot fresh, a drop reconnects", async () => {
  const server = await scriptedServer((socket, request, connection) => {
    if (request.op !== "subscribe") return;
    send(socket, { seq: 1, type: "subscribed", channel: "system", id: request.id, subscription: "prices:btc-usdc-perp" });
    send(socket, { seq: 1, type: "connected", protocol_version: 1, interval_ms: 1000, server_time: Date.now() });
    send(socket, { seq: 2, type: "price_update", price: "1" });
    if (connection === 1 && request.id === 1) {
      send(socket, { seq: 4, type: "price_update", price: "3" }); // seq 3 lost: resubscribe
    } else if (connection === 1) {
      send(socket, { seq: 3, type: "resync", reason: "market_restarted" });
      send(socket, { seq: 4, type: "price_update", price: "4" });
      socket.close(1011, "internal_error"); // not fatal: reconnect
    }
  });
  const { seen, handlers } = collect();
  const stream = new PerpStream(server.url, [{ channel: "prices", market_id: "BTC-USDC-PERP" }], handlers, {
    backoff: new Backoff({ initialMs: 10, maxMs: 10 }),
  }).start();
  await until(() => seen.snapshots.length >= 4);
  stream.stop();
  server.close();
  assert.deepEqual(
    server.requests.map((r) => [r.connection, r.op]),
    [[1, "subscribe"], [1, "unsubscribe"], [1, "subscribe"], [2, "subscribe"]],
  );
  assert.deepEqual(seen.snapshots, [
    { seq: 2, price: "1", fresh: true },
    { seq: 2, price: "1", fresh: true },
    { seq: 4, price: "4", fresh: true }, // after the resync
    { seq: 2, price: "1", fresh: true }, // after the reconnect
  ]);
  assert.ok(seen.statuses.some((s) => s.includes("messages lost")));
  assert.ok(seen.statuses.some((s) => s.startsWith("disconnected (close 1011")));
  assert.deepEqual(seen.fatal, []);
});

test("a refused subscription and a 4404 close are fatal: no reconnect", async () => {
  const server = await scriptedServer((socket, request) => {
    send(socket, { seq: 1, type: "error", channel: "system", code: "unknown_market", message: "nope", id: request.id });
  });
  const { seen, handlers } = collect();
  new PerpStream(server.url, [{ channel: "prices", market_id: "doge" }], handlers).start();
  await until(() => seen.fatal.length === 1);
  assert.match(seen.fatal[0], /unknown_market/);
  server.close();

  const closing = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await once(closing, "listening");
  let connections = 0;
  closing.on("connection", (socket) => {
    connections += 1;
    socket.close(4404, "unknown_market");
  });
  const second = collect();
  new PerpStream(`ws://127.0.0.1:${closing.address().port}`, [], second.handlers, {
    backoff: new Backoff({ initialMs: 10, maxMs: 10 }),
  }).start();
  await until(() => second.seen.fatal.length === 1);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(connections, 1);
  closing.close();
});

test("a reconnect resumes from the last offset, repeats are dropped, an unrecovered resume starts afresh", async () => {
  const server = await scriptedServer((socket, request, connection) => {
    if (request.op !== "subscribe") return;
    const stream = { epoch: "e1" };
    send(socket, { seq: 1, type: "subscribed", channel: "system", id: request.id, subscription: "prices:btc-usdc-perp" });
    if (connection === 1) {
      send(socket, { seq: 1, type: "connected" });
      send(socket, { seq: 2, type: "price_update", price: "1", offset: 10, ...stream });
      send(socket, { seq: 3, type: "price_update", price: "2", offset: 12, ...stream });
      socket.close(1013, "slow_consumer");
    } else if (connection === 2) {
      send(socket, { seq: 1, type: "connected", recovered: true });
      send(socket, { seq: 2, type: "price_update", price: "2", offset: 12, ...stream }); // a repeat: dropped
      send(socket, { seq: 3, type: "price_update", price: "3", offset: 15, ...stream });
      socket.close(1001, "server_shutting_down");
    } else {
      send(socket, { seq: 1, type: "connected", recovered: false }); // another epoch now
      send(socket, { seq: 2, type: "price_update", price: "4", offset: 3, epoch: "e2" });
    }
  });
  const { seen, handlers } = collect();
  const missed = [];
  const stream = new PerpStream(server.url, [{ channel: "prices", market_id: "btc-usdc-perp" }],
    { ...handlers, missed: (name) => missed.push(name) },
    { backoff: new Backoff({ initialMs: 10, maxMs: 10 }) }).start();
  await until(() => seen.snapshots.length >= 4);
  stream.stop();
  server.close();
  const subscribes = server.requests.filter((r) => r.op === "subscribe");
  assert.deepEqual(subscribes.map((r) => [r.connection, r.since]), [
    [1, undefined],
    [2, { epoch: "e1", offset: 12 }],
    [3, { epoch: "e1", offset: 15 }],
  ]);
  assert.deepEqual(seen.snapshots, [
    { seq: 2, price: "1", fresh: true },
    { seq: 3, price: "2", fresh: false },
    { seq: 3, price: "3", fresh: false }, // resumed: no fresh start, nothing twice
    { seq: 2, price: "4", fresh: true }, // not recovered: this snapshot replaces all state
  ]);
  assert.deepEqual(missed, ["prices:btc-usdc-perp"]);
  assert.ok(seen.statuses.some((s) => s.includes("offset 12 seen already")));
});

test("a resume position the server refuses (invalid_since) is forgotten: the stream is subscribed afresh", async () => {
  const server = await scriptedServer((socket, request, connection) => {
    if (request.op !== "subscribe") return;
    if (request.since) {
      send(socket, { seq: 1, type: "error", channel: "system", code: "invalid_since", message: "no", id: request.id });
      return;
    }
    send(socket, { seq: 1, type: "subscribed", channel: "system", id: request.id, subscription: "prices:btc-usdc-perp" });
    send(socket, { seq: 1, type: "connected" });
    send(socket, { seq: 2, type: "price_update", price: "1", offset: 10, epoch: "e1" });
    if (connection === 1) socket.close(1011, "internal_error");
  });
  const { seen, handlers } = collect();
  const stream = new PerpStream(server.url, [{ channel: "prices", market_id: "btc-usdc-perp" }], handlers, {
    backoff: new Backoff({ initialMs: 10, maxMs: 10 }),
  }).start();
  await until(() => seen.snapshots.length >= 2);
  stream.stop();
  server.close();
  assert.deepEqual(server.requests.filter((r) => r.op === "subscribe").map((r) => [r.connection, r.since]), [
    [1, undefined],
    [2, { epoch: "e1", offset: 10 }],
    [2, undefined],
  ]);
  assert.deepEqual(seen.fatal, []);
});
