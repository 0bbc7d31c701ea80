"""Real published Hermes payloads, and a replay derived from them.

``fixtures/`` holds Hermes JSON as Pyth published it (see its README for
where each came from). A replay needs more than a handful of slots, so
``derived_replay`` stretches the real BTC+ETH update of slot 161371489 into
``slots`` consecutive slots the way Hermes streams them:

- slot ``161371489 + k``; ``publish_time`` = the real one + ``floor(0.4 k)``
  (400 ms slots, so two or three slots share each whole second);
- every event carries both feeds, as Hermes does; in one slot out of four
  a feed does not change and its entry is repeated exactly (price, EMA,
  ``publish_time``, ``prev_publish_time``), as an unchanged feed is;
- otherwise its price moves by a seeded step of up to half its real
  confidence, its confidence stays the real one, its EMA moves 1/1000 of
  the way to the price, ``prev_publish_time`` is its previous ``publish_time``;
- ``binary`` is the real signed blob of slot 161371489, byte for byte, in
  every event (so it proves the first event's prices, not the derived ones).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
REAL_UPDATE = FIXTURES / "update_btc_eth_slot_161371489.json"
REAL_LATEST = FIXTURES / "latest_btc_and_c964_slot_138881186.json"
REAL_STREAM = FIXTURES / "stream_btc_slots_138886134_138886135.sse"


def real_document(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def real_stream_events() -> list[str]:
    """The ``data:`` payloads of the published stream capture, in order."""
    frames = REAL_STREAM.read_text().split("\n\n")
    return [frame.removeprefix("data:") for frame in frames if frame]


def compact(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def derived_replay(slots: int, *, seed: int = 13) -> list[str]:
    """``slots`` stream payloads derived from the real update, as the module says."""
    base = real_document(REAL_UPDATE)
    rng = random.Random(seed)
    current = copy.deepcopy(base["parsed"])
    first_slot = current[0]["metadata"]["slot"]
    first_time = current[0]["price"]["publish_time"]
    documents = [compact(base)]
    for k in range(1, slots):
        slot, publish_time = first_slot + k, first_time + (2 * k) // 5
        for item in current:
            item["metadata"]["slot"] = slot
            if (k + len(item["id"]) + int(item["id"][:2], 16)) % 4 == 3:
                continue  # unchanged this slot: Hermes repeats the entry as it was
            price, conf = int(item["price"]["price"]), int(item["price"]["conf"])
            price += rng.randint(-conf // 2, conf // 2) or 1
            ema = int(item["ema_price"]["price"])
            item["metadata"]["prev_publish_time"] = item["price"]["publish_time"]
            item["metadata"]["proof_available_time"] = publish_time + 1
            item["price"].update(price=str(price), publish_time=publish_time)
            item["ema_price"].update(price=str(ema + (price - ema) // 1000), publish_time=publish_time)
        documents.append(compact({"binary": base["binary"], "parsed": current}))
    return documents


def distinct_prices(documents: list[str]) -> set[tuple[str, str, str, int]]:
    """Every (feed, price, EMA price, publish_time) the documents carry, once."""
    return {
        (item["id"], item["price"]["price"], item["ema_price"]["price"], item["price"]["publish_time"])
        for document in documents
        for item in json.loads(document)["parsed"]
    }
