// Monitor one account: its positions, liquidation warnings, chain events, and
// whether it shows up among the liquidation candidates.
//
//   node positions.js [URL] ADDRESS [--duration SECONDS]
//   PERPSTREAM_URL=... PERPSTREAM_ADDRESS=0x... DURATION_S=10 node positions.js
//
// Chain events arrive `pending`, later `final`, and after a reconnect possibly
// again: they are applied once, keyed on (tx_hash, log_index). After a
// reconnect the library resumes both streams, so the events missed meanwhile
// arrive too; when the server cannot replay them it says so (MISSED).

import { EventDeduper, PerpStream, parseArgs, runFor } from "./lib/perpstream.js";

const options = parseArgs(process.argv.slice(2), { duration: process.env.DURATION_S ?? "0" });
const url = options.positional[0] ?? process.env.PERPSTREAM_URL ?? "ws://127.0.0.1:8000";
const address = options.positional[1] ?? process.env.PERPSTREAM_ADDRESS;
if (!address) {
  console.error("usage: node positions.js [URL] ADDRESS [--duration SECONDS]");
  process.exit(2);
}

const events = new EventDeduper();
let account = address; // replaced by the server's EIP-55 spelling

const stream = new PerpStream(
  url,
  [
    { channel: "positions", user_address: address },
    { channel: "liquidations" },
  ],
  {
    snapshot(message, { fresh }) {
      if (message.type === "positions_update") {
        account = message.user_address;
        console.log(
          `positions ${account} open ${message.positions.length} equity ${message.total_equity} ` +
            `unrealized_pnl ${message.total_unrealized_pnl}${fresh ? " (fresh snapshot)" : ""}`,
        );
        for (const p of message.positions) {
          console.log(
            `  ${p.position_id.slice(0, 10)} ${p.market_id} ${p.side} size ${p.size} mark ${p.mark_price} ` +
              `pnl ${p.unrealized_pnl} health ${p.health_factor} liq ${p.liquidation_price}${p.stale ? " STALE" : ""}`,
          );
        }
      } else if (message.type === "liquidation_alert") {
        message.candidates.forEach((c, rank) => {
          if (c.user_address === account) {
            console.log(
              `ALERT ${account} position ${c.position_id.slice(0, 10)} is liquidation candidate #${rank + 1}: ` +
                `health ${c.health_factor} distance ${c.distance_pct}%${c.liquidatable ? " LIQUIDATABLE" : ""}`,
            );
          }
        });
      }
    },
    event(message) {
      if (message.type === "liquidation_warning") {
        console.log(
          `WARNING ${message.severity} ${message.market_id} ${message.position_id.slice(0, 10)} ` +
            `health ${message.health_factor} mark ${message.mark_price} liquidation ${message.liquidation_price}`,
        );
        return;
      }
      if (message.type === "liquidation_event") {
        if (message.user_address === account) {
          console.log(`LIQUIDATION ${message.kind} ${message.market_id} ${message.position_id.slice(0, 10)} ` +
            `health ${message.health_factor} shortfall ${message.shortfall}`);
        }
        return;
      }
      if (!message.type.startsWith("position_")) return; // a type this client does not know: ignore it
      const verdict = events.see(message);
      const where = `${message.event.tx_hash.slice(0, 10)}:${message.event.log_index}`;
      if (verdict === "duplicate") {
        console.log(`duplicate ${message.type} ${where} (${message.finality}) skipped`);
      } else {
        console.log(`event ${message.type} ${message.market_id} ${message.position_id.slice(0, 10)} ${where} ${verdict}`);
      }
    },
    missed: (name) => console.log(`MISSED ${name}: events may have been lost while away; the next snapshot is current`),
    status: (text) => console.error(`[positions] ${text}`),
    fatal(text) {
      console.error(`[positions] ${text}`);
      process.exitCode = 2;
    },
  },
).start();

runFor(options.duration, () => stream.stop());
