// A dry-run liquidation bot: acts on the live liquidation events and prints
// what it would liquidate. It holds no keys and sends nothing to any chain.
//
//   node liquidation-bot.js [URL] [--min-reward USD] [--cooldown SECONDS] [--duration SECONDS]
//   PERPSTREAM_URL=... MIN_REWARD=10 DURATION_S=30 node liquidation-bot.js
//
// The `liquidations` stream sends a `liquidation_event` in the very price tick
// in which a position becomes liquidatable: the contract's own verdict at the
// newest oracle price, with that price's signed `update_data` to submit with
// the transaction. The bot acts on `kind: "liquidatable"` events whose
// `potential_reward` is at least --min-reward (compared exactly, BigInt) and
// forgets a position when it recovers, is closed or is liquidated. After a
// reconnect the library resumes the stream, and the server replays the
// events missed meanwhile; when it cannot (`missed`), and after a first
// connect or a resync, the bot takes the candidates marked `liquidatable` on
// the fresh `liquidation_alert` that follows. Events are deduplicated on
// their `id`; a position it acted on is not acted on again for --cooldown
// seconds (the chain needs time to confirm).

import { PerpStream, compareDecimal, parseArgs, runFor } from "./lib/perpstream.js";

const options = parseArgs(process.argv.slice(2), {
  duration: process.env.DURATION_S ?? "0",
  "min-reward": process.env.MIN_REWARD ?? "0",
  cooldown: "30",
});
const url = options.positional[0] ?? process.env.PERPSTREAM_URL ?? "ws://127.0.0.1:8000";
const minReward = options["min-reward"];
const cooldownMs = Number(options.cooldown) * 1000;
const attempted = new Map(); // position_id -> when we (would have) acted
const seenEvents = new Set(); // event ids, the newest SEEN_LIMIT
const SEEN_LIMIT = 10_000;

function consider(target, why) {
  const now = Date.now();
  for (const [id, at] of attempted) if (now - at > cooldownMs) attempted.delete(id);
  if (attempted.has(target.position_id)) return;
  if (compareDecimal(target.potential_reward ?? "0", minReward) < 0) {
    console.log(`SKIP ${target.position_id} (${why}): reward ${target.potential_reward} below ${minReward}`);
    return;
  }
  attempted.set(target.position_id, now);
  const blobs = target.update_data?.length ?? 0;
  console.log(
    `WOULD LIQUIDATE ${target.position_id} of ${target.user_address} on ${target.market_id} ` +
      `(${target.side} ${target.size}) reward ${target.potential_reward} health ${target.health_factor} ` +
      `mark ${target.mark_price} with ${blobs} oracle update(s) (${why})`,
  );
}

const stream = new PerpStream(url, [{ channel: "liquidations" }], {
  snapshot(alert, { fresh }) {
    console.log(
      `alert seq ${alert.seq}: ${alert.candidates.length} candidates, ${alert.total_at_risk} at risk, ` +
        `${alert.total_liquidatable} liquidatable`,
    );
    if (!fresh) return; // the events (replayed after a resume) say everything, and sooner
    const liquidatable = alert.candidates.filter((c) => c.liquidatable);
    // Best reward first: that is the order a real bot would spend gas in.
    liquidatable.sort((a, b) => compareDecimal(b.potential_reward, a.potential_reward));
    for (const candidate of liquidatable) consider(candidate, "alert");
  },
  event(message) {
    if (message.type !== "liquidation_event" || seenEvents.has(message.id)) return;
    seenEvents.add(message.id);
    if (seenEvents.size > SEEN_LIMIT) seenEvents.delete(seenEvents.values().next().value);
    console.log(
      `event ${message.kind} ${message.position_id} on ${message.market_id} health ${message.health_factor} ` +
        `(offset ${message.offset})`,
    );
    if (message.kind === "liquidatable") consider(message, "event");
    else attempted.delete(message.position_id); // recovered, closed or liquidated: nothing to do
  },
  missed: () => console.log("MISSED events while away: acting on the next alert's liquidatable candidates"),
  status: (text) => console.error(`[bot] ${text}`),
  fatal(text) {
    console.error(`[bot] ${text}`);
    process.exitCode = 2;
  },
}).start();

runFor(options.duration, () => stream.stop());
