// Stream one market's oracle price.
//
//   node prices.js [URL] [MARKET] [--duration SECONDS]
//   PERPSTREAM_URL=ws://127.0.0.1:8000 DURATION_S=10 node prices.js
//
// Prints one line per price_update; says when the price is stale, when the
// server conflated updates for us (we were slow), and when it reconnects.
// A reconnect resumes the stream, but a price stream has nothing to replay
// (each update replaces the last): the first update after one is current.

import { PerpStream, parseArgs, runFor } from "./lib/perpstream.js";

const options = parseArgs(process.argv.slice(2), { duration: process.env.DURATION_S ?? "0" });
const url = options.positional[0] ?? process.env.PERPSTREAM_URL ?? "ws://127.0.0.1:8000";
const market = options.positional[1] ?? "btc-usdc-perp";

const stream = new PerpStream(url, [{ channel: "prices", market_id: market }], {
  snapshot(message, { fresh }) {
    const flags = [
      message.stale ? "STALE" : "",
      message.conflated ? `(+${message.conflated} conflated)` : "",
      fresh ? "(fresh snapshot)" : "",
    ].filter(Boolean);
    // Prices stay strings: print them as sent, never through a float.
    console.log(
      `price ${message.market_id} ${message.price} ±${message.confidence} ema ${message.ema_price} ` +
        `age ${message.age_ms}ms latency ${Date.now() - message.ts}ms seq ${message.seq} ${flags.join(" ")}`.trimEnd(),
    );
  },
  status: (text) => console.error(`[prices] ${text}`),
  fatal(text) {
    console.error(`[prices] ${text}`);
    process.exitCode = 2;
  },
}).start();

runFor(options.duration, () => stream.stop());
