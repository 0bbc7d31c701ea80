// A dry-run liquidation bot: watches the ranked candidates and prints what it
// would liquidate. It holds no keys and sends nothing to any chain.
//
//   node liquidation-bot.js [URL] [--min-reward USD] [--cooldown SECONDS] [--duration SECONDS]
//   PERPSTREAM_URL=... MIN_REWARD=10 DURATION_S=30 node liquidation-bot.js
//
// A candidate qualifies when the server marks it `liquidatable` (never on a
// stale price) and its `potential_reward` is at least --min-reward. Rewards
// are compared exactly (BigInt), never as floats. A position it acted on is
// not acted on again for --cooldown seconds (the chain needs time to confirm).

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

const stream = new PerpStream(url, [{ channel: "liquidations" }], {
  snapshot(alert) {
    const now = Date.now();
    for (const [id, at] of attempted) if (now - at > cooldownMs) attempted.delete(id);
    const qualifying = alert.candidates.filter(
      (c) => c.liquidatable && compareDecimal(c.potential_reward, minReward) >= 0 && !attempted.has(c.position_id),
    );
    console.log(
      `alert seq ${alert.seq}: ${alert.candidates.length} candidates, ${alert.total_at_risk} at risk, ` +
        `${alert.total_liquidatable} liquidatable, ${qualifying.length} to act on`,
    );
    // Best reward first: that is the order a real bot would spend gas in.
    qualifying.sort((a, b) => compareDecimal(b.potential_reward, a.potential_reward));
    for (const c of qualifying) {
      attempted.set(c.position_id, now);
      console.log(
        `WOULD LIQUIDATE ${c.position_id} of ${c.user_address} on ${c.market_id} (${c.side} ${c.size}) ` +
          `reward ${c.potential_reward} health ${c.health_factor} mark ${c.mark_price}`,
      );
    }
  },
  status: (text) => console.error(`[bot] ${text}`),
  fatal(text) {
    console.error(`[bot] ${text}`);
    process.exitCode = 2;
  },
}).start();

runFor(options.duration, () => stream.stop());
