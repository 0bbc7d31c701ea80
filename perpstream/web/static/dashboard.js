// perpstream dashboard: one multiplexed WebSocket, no dependencies, no build step.
//
// Layout of this file: exact decimals (display only) → formatting → the stream
// client (subscriptions, reconnect and resume, heartbeat) → the views → start-up.
"use strict";

(() => {
  // ------------------------------------------------------------------ exact decimals
  //
  // The server sends every decimal as a string. Numbers are rounded here for
  // display only, on BigInt digits, so "1.005" rounds to "1.01" and a 20-digit
  // open interest keeps its last digit: no float ever touches a value.

  const DECIMAL_RE = /^([+-]?)(\d+)(?:\.(\d*))?$/;

  /** A decimal string as {units, scale} (value = units / 10^scale), or null. */
  function parseDecimal(text) {
    if (typeof text === "number" && Number.isInteger(text)) text = String(text);
    if (typeof text !== "string") return null;
    const match = DECIMAL_RE.exec(text.trim());
    if (!match) return null;
    const fraction = match[3] || "";
    const units = BigInt(match[2] + fraction);
    return { units: match[1] === "-" ? -units : units, scale: fraction.length };
  }

  const pow10 = (n) => 10n ** BigInt(n);

  /** Divide with rounding: half away from zero ("half-up") or towards zero ("down"). */
  function roundedQuotient(numerator, denominator, mode) {
    if (denominator < 0n) {
      numerator = -numerator;
      denominator = -denominator;
    }
    const negative = numerator < 0n;
    const magnitude = negative ? -numerator : numerator;
    let quotient = magnitude / denominator;
    if (mode === "half-up" && (magnitude % denominator) * 2n >= denominator) quotient += 1n;
    return negative ? -quotient : quotient;
  }

  /** The decimal at exactly `places` fraction digits. */
  function rescale(value, places, mode = "half-up") {
    if (places >= value.scale) return { units: value.units * pow10(places - value.scale), scale: places };
    return { units: roundedQuotient(value.units, pow10(value.scale - places), mode), scale: places };
  }

  /** value × 10^exponent, exactly. */
  function shift(value, exponent) {
    if (exponent <= value.scale) return { units: value.units, scale: value.scale - exponent };
    return { units: value.units * pow10(exponent - value.scale), scale: 0 };
  }

  /** a / b rounded half-up to `places` fraction digits; null when b is zero. */
  function divide(a, b, places) {
    if (b.units === 0n) return null;
    const numerator = a.units * pow10(b.scale + places);
    const denominator = b.units * pow10(a.scale);
    return { units: roundedQuotient(numerator, denominator, "half-up"), scale: places };
  }

  function add(a, b) {
    const scale = Math.max(a.scale, b.scale);
    return { units: a.units * pow10(scale - a.scale) + b.units * pow10(scale - b.scale), scale };
  }

  function compare(a, b) {
    const scale = Math.max(a.scale, b.scale);
    const x = a.units * pow10(scale - a.scale);
    const y = b.units * pow10(scale - b.scale);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  /** Plain notation with thousands separators; "+" on request; U+2212 for minus. */
  function render(value, { plus = false } = {}) {
    const negative = value.units < 0n;
    const digits = (negative ? -value.units : value.units).toString().padStart(value.scale + 1, "0");
    const cut = digits.length - value.scale;
    const whole = digits.slice(0, cut).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const fraction = value.scale ? "." + digits.slice(cut) : "";
    const sign = negative ? "\u2212" : plus && value.units > 0n ? "+" : "";
    return sign + whole + fraction;
  }

  // ------------------------------------------------------------------ formatting

  const DASH = "\u2014";

  /** A decimal string at `places` digits (rounded for display only); "—" when absent. */
  function formatDecimal(text, places, { mode = "half-up", plus = false } = {}) {
    const value = parseDecimal(text);
    if (value === null) return text == null ? DASH : String(text);
    return render(rescale(value, places, mode), { plus });
  }

  /** Fraction digits that suit a price of this size: 64,996.95 · 150.044 · 0.612345. */
  function pricePlaces(text) {
    const value = parseDecimal(text);
    if (value === null) return 2;
    const whole = (value.units < 0n ? -value.units : value.units) / pow10(value.scale);
    const digits = whole === 0n ? 0 : whole.toString().length;
    if (digits >= 4) return 2;
    if (digits === 3) return 3;
    return digits >= 1 ? 4 : 6;
  }

  const formatPrice = (text) => formatDecimal(text, pricePlaces(text));

  /** A quantity as sent, with at most `maxPlaces` digits (sizes, open interest). */
  function formatQuantity(text, maxPlaces = 6, options = {}) {
    const value = parseDecimal(text);
    if (value === null) return text == null ? DASH : String(text);
    return render(rescale(value, Math.min(value.scale, maxPlaces)), options);
  }

  function formatUsd(text, { plus = false } = {}) {
    const value = parseDecimal(text);
    if (value === null) return text == null ? DASH : String(text);
    const shown = render(rescale(value, 2), { plus });
    return shown.replace(/^([+\u2212]?)/, "$1$");
  }

  /** A fraction (0.0123) as a percentage (1.23 %) with `places` digits. */
  function formatPercent(text, places, { plus = false } = {}) {
    const value = parseDecimal(text);
    if (value === null) return DASH;
    return render(rescale(shift(value, 2), places), { plus }) + "%";
  }

  /** An hourly funding rate as an annualised percentage (× 24 × 365 × 100). */
  function formatAnnualRate(text) {
    const value = parseDecimal(text);
    if (value === null) return DASH;
    const yearly = { units: value.units * 876000n, scale: value.scale };
    return render(rescale(yearly, 4), { plus: true }) + "% APR";
  }

  // Health is truncated, never rounded up, so the number shown can never sit
  // on the safe side of a threshold the colour says was crossed.
  const formatHealth = (text) => formatDecimal(text, 2, { mode: "down" });

  const HEALTH_THRESHOLDS = [
    ["ok", parseDecimal("1.2")],
    ["warning", parseDecimal("1.05")],
    ["critical", parseDecimal("1.0")],
  ];

  /** ok ≥ 1.2 > warning ≥ 1.05 > critical ≥ 1.0 > liquidatable; "unknown" without a value. */
  function healthLevel(text) {
    const value = parseDecimal(text);
    if (value === null) return "unknown";
    for (const [level, floor] of HEALTH_THRESHOLDS) {
      if (compare(value, floor) >= 0) return level;
    }
    return "liquidatable";
  }

  function shortHex(text, head = 6, tail = 4) {
    if (typeof text !== "string" || text.length <= head + tail + 1) return text || DASH;
    return `${text.slice(0, head)}\u2026${text.slice(-tail)}`;
  }

  function formatAge(milliseconds) {
    if (!Number.isFinite(milliseconds)) return DASH;
    const ms = Math.max(0, milliseconds);
    if (ms < 10_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)} s`;
    if (ms < 120_000) return `${Math.floor(ms / 1000)} s`;
    return `${Math.floor(ms / 60_000)} min`;
  }

  const formatClock = (epochMs) =>
    new Date(epochMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  const marketLabel = (marketId) => String(marketId || "").toUpperCase();

  // ------------------------------------------------------------------ DOM helpers

  /** An element with attributes (data-* included) and text or element children. */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const $ = (selector, root = document) => root.querySelector(selector);

  /** Restart a one-shot CSS animation class (price ticks, new warnings). */
  function flash(node, className) {
    node.classList.remove("flash-up", "flash-down", "flash-new");
    void node.offsetWidth;
    node.classList.add(className);
  }

  // ------------------------------------------------------------------ stream client

  const RECONNECT_BASE_MS = 500;
  const RECONNECT_MAX_MS = 15_000;
  const HEARTBEAT_EVERY_MS = 10_000;
  const SHUTDOWN_BACKOFF_STEP = 2; // first retry after a shutdown: 1–2 s
  const SILENCE_LIMIT_MS = 30_000; // prices tick every second: this much silence is a dead link

  // Which field names a channel's stream; position events also carry a market_id.
  const STREAM_KEY_FIELDS = { prices: "market_id", market_stats: "market_id", positions: "user_address" };

  /** "channel:key" for a subscription spec or a message (keys compare case-insensitively). */
  function streamKey(item) {
    const field = STREAM_KEY_FIELDS[item.channel];
    return `${item.channel}:${field ? String(item[field] || "").toLowerCase() : ""}`;
  }

  /**
   * One multiplexed WebSocket carrying every subscription of the page.
   *
   * Subscriptions are remembered here and replayed after every reconnect, so
   * the views never need to know the link dropped. Each remembers the last
   * (epoch, offset) it received and resumes from there (`since`): the server
   * sends what was missed while offline, or says it cannot (`recovered:
   * false`, passed on to `onMissed`). A message at or below the last offset
   * of its epoch was handled already and is dropped. Reconnects back off
   * exponentially with jitter (half fixed, half random) so that a restarted
   * server is not met by every browser at the same instant. Each stream's seq
   * is checked; a gap means lost messages, so that stream is re-subscribed,
   * resuming, to get what was lost.
   */
  class StreamClient {
    constructor({ url, prepare, onMessage, onState, onRefused, onResync, onMissed }) {
      this.url = url;
      this.prepare = prepare;
      this.onMessage = onMessage;
      this.onState = onState;
      this.onRefused = onRefused;
      this.onResync = onResync;
      this.onMissed = onMissed;
      this.subscriptions = new Map(); // key → {spec, id, lastSeq, position: {epoch, offset} | null}
      this.nextId = 1;
      this.attempt = 0;
      this.socket = null;
      this.retryTimer = null;
      this.lastHeard = 0;
      this.clockOffset = 0; // server clock − local clock, from each `connected`
      this.goodbye = null;
      this.connecting = false;
    }

    start() {
      this.connect();
      setInterval(() => this.checkHeartbeat(), HEARTBEAT_EVERY_MS);
    }

    /** Server time now, as well as this client can tell. */
    serverNow() {
      return Date.now() + this.clockOffset;
    }

    subscribe(spec) {
      const key = streamKey(spec);
      if (this.subscriptions.has(key)) return;
      const subscription = { spec, id: this.nextId++, lastSeq: 0, position: null };
      this.subscriptions.set(key, subscription);
      this.sendSubscribe(subscription);
    }

    unsubscribe(spec) {
      const key = streamKey(spec);
      if (!this.subscriptions.delete(key)) return;
      this.send({ op: "unsubscribe", ...spec, id: this.nextId++ });
    }

    /** Retry at once instead of waiting out the backoff (a click, the OS saying we are online). */
    retryNow() {
      if (this.socket || this.connecting) return;
      clearTimeout(this.retryTimer);
      this.connect();
    }

    async connect() {
      this.retryTimer = null;
      this.connecting = true;
      this.onState({ state: this.attempt === 0 ? "connecting" : "reconnecting", attempt: this.attempt });
      try {
        await this.prepare();
      } catch (error) {
        this.connecting = false;
        this.scheduleReconnect(`server unreachable (${error.message || error})`);
        return;
      }
      const socket = new WebSocket(this.url);
      this.socket = socket;
      this.connecting = false;
      this.goodbye = null;
      socket.addEventListener("open", () => {
        if (this.socket !== socket) return;
        this.lastHeard = Date.now();
        this.onState({ state: "live" });
        for (const subscription of this.subscriptions.values()) {
          subscription.lastSeq = 0;
          this.sendSubscribe(subscription);
        }
      });
      socket.addEventListener("message", (event) => {
        if (this.socket !== socket) return;
        this.lastHeard = Date.now();
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        this.receive(message);
      });
      socket.addEventListener("close", (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        const reason = this.goodbye || event.reason || `closed (${event.code})`;
        this.scheduleReconnect(reason);
      });
    }

    scheduleReconnect(reason) {
      const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** this.attempt);
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      this.attempt += 1;
      this.onState({ state: "reconnecting", reason, retryAt: Date.now() + delay, attempt: this.attempt });
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    /** Ping now and then; drop a link that has gone silent (browsers hide WebSocket pings). */
    checkHeartbeat() {
      const socket = this.socket;
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        this.socket = null;
        socket.close(4000, "heartbeat timeout");
        this.scheduleReconnect("no data from the server");
        return;
      }
      this.send({ op: "ping" });
    }

    send(message) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(message));
      }
    }

    sendSubscribe(subscription) {
      const since = subscription.position;
      this.send({ op: "subscribe", ...subscription.spec, id: subscription.id, ...(since && { since }) });
    }

    /** Whether `message` was handled already (offset at or below the last of its epoch); else note it. */
    repeated(subscription, message) {
      if (!Number.isInteger(message.offset)) return false;
      const last = subscription.position;
      if (last && last.epoch === message.epoch && message.offset <= last.offset) return true;
      subscription.position = { epoch: message.epoch, offset: message.offset };
      return false;
    }

    resubscribe(subscription) {
      this.send({ op: "unsubscribe", ...subscription.spec, id: this.nextId++ });
      subscription.id = this.nextId++;
      subscription.lastSeq = 0;
      this.sendSubscribe(subscription);
    }

    receive(message) {
      if (message.channel === "system") {
        this.receiveSystem(message);
        return;
      }
      const subscription = this.subscriptions.get(streamKey(message));
      if (!subscription) return; // the tail of a stream we just left
      if (message.type === "connected") {
        subscription.lastSeq = message.seq;
        this.attempt = 0; // the server is really serving: the next outage starts afresh
        if (Number.isFinite(message.server_time)) this.clockOffset = message.server_time - Date.now();
        if (message.recovered === false) {
          subscription.position = null; // another history: its offsets start over
          this.onMissed(subscription.spec);
        }
        return;
      }
      if (subscription.lastSeq && message.seq !== subscription.lastSeq + 1) {
        this.resubscribe(subscription);
        return;
      }
      subscription.lastSeq = message.seq;
      if (this.repeated(subscription, message)) return;
      if (message.type === "resync") {
        this.onResync(subscription.spec, message);
        return;
      }
      this.onMessage(message);
    }

    receiveSystem(message) {
      if (message.type === "goodbye") {
        this.goodbye = `server said goodbye: ${message.reason}`;
        // A server going down is not back within half a second: start the backoff further along.
        if (message.reason === "server_shutting_down") this.attempt = Math.max(this.attempt, SHUTDOWN_BACKOFF_STEP);
      } else if (message.type === "error" && message.id != null) {
        for (const [key, subscription] of this.subscriptions) {
          if (subscription.id === message.id && message.code === "invalid_since") {
            // The server cannot resume from there: subscribe afresh.
            subscription.position = null;
            subscription.id = this.nextId++;
            this.sendSubscribe(subscription);
          } else if (subscription.id === message.id) {
            this.subscriptions.delete(key);
            this.onRefused(subscription.spec, message);
          }
        }
      }
    }
  }

  // ------------------------------------------------------------------ connection badge

  function connectionView(client) {
    const button = $("#connection");
    const text = $("#connection-text");
    let current = { state: "connecting" };

    function paint() {
      button.dataset.state = current.state;
      document.body.classList.toggle("offline", current.state !== "live");
      if (current.state === "live") {
        text.textContent = "Live";
        button.title = "Streaming over one WebSocket";
      } else if (current.state === "reconnecting") {
        const seconds = current.retryAt ? Math.max(0, Math.ceil((current.retryAt - Date.now()) / 1000)) : 0;
        text.textContent = seconds > 0 ? `Reconnecting in ${seconds} s` : "Reconnecting…";
        button.title = `${current.reason || "connection lost"} · attempt ${current.attempt} · click to retry now`;
      } else {
        text.textContent = "Connecting…";
      }
    }

    button.addEventListener("click", () => client.retryNow());
    window.addEventListener("online", () => client.retryNow());
    setInterval(() => current.state === "reconnecting" && paint(), 500);
    return (state) => {
      current = state;
      paint();
    };
  }

  // ------------------------------------------------------------------ market tiles

  function statRow(label, field, text = DASH) {
    return el("div", { class: "stat" },
      el("dt", { text: label }),
      el("dd", { "data-field": field, text }));
  }

  function buildTile(market) {
    return el("article", { class: "tile", "data-market": market.market_id, "data-stale": "false" },
      el("header", { class: "tile-head" },
        el("div", {},
          el("span", { class: "tile-base", text: market.base }),
          el("span", { class: "tile-id", text: marketLabel(market.market_id) })),
        el("span", { class: "badge stale-badge", text: "STALE" }),
        el("span", { class: "badge source-badge", "data-field": "source" })),
      el("div", { class: "tile-price" },
        el("span", { class: "price", "data-field": "price", text: DASH }),
        el("span", { class: "tick", "data-field": "tick", "aria-hidden": "true" })),
      el("div", { class: "tile-sub" },
        el("span", { "data-field": "confidence", text: DASH }),
        el("span", { "data-field": "ema", text: DASH }),
        el("span", { class: "age", "data-field": "age", text: DASH })),
      el("div", { class: "skew", title: "Long / short open interest" },
        el("span", { class: "skew-long", "data-field": "skew-long" })),
      el("div", { class: "skew-legend" },
        el("span", { class: "side-long", "data-field": "long_open_interest", text: DASH }),
        el("span", { class: "skew-caption", text: "open interest long / short" }),
        el("span", { class: "side-short", "data-field": "short_open_interest", text: DASH })),
      el("dl", { class: "stats" },
        statRow("Open interest", "open_interest_usd"),
        statRow("Open positions", "open_positions"),
        statRow("Funding", "funding_rate"),
        statRow("Predicted", "predicted_funding_rate"),
        statRow("24 h volume", "volume_24h_usd"),
        statRow("Max leverage", "max_leverage", `${formatQuantity(market.max_leverage, 2)}\u00D7`)));
  }

  function marketTiles(client) {
    const container = $("#markets");
    const tiles = new Map(); // market_id → {tile, market, price: the newest price_update}

    const field = (entry, name) => entry.tile.querySelector(`[data-field="${name}"]`);

    function setMarkets(markets) {
      const ids = markets.map((m) => m.market_id);
      if (ids.join() === [...tiles.keys()].join()) return;
      tiles.clear();
      container.replaceChildren();
      for (const market of markets) {
        const entry = { tile: buildTile(market), market, price: null };
        tiles.set(market.market_id, entry);
        container.append(entry.tile);
      }
      if (!markets.length) container.append(el("p", { class: "placeholder", text: "No markets configured." }));
    }

    function showPrice(message) {
      const entry = tiles.get(message.market_id);
      if (!entry) return;
      const previous = entry.price;
      entry.price = message;
      const priceNode = field(entry, "price");
      priceNode.textContent = formatPrice(message.price);
      priceNode.dataset.value = message.price;
      if (previous && previous.price !== message.price) {
        const direction = compare(parseDecimal(message.price), parseDecimal(previous.price)) > 0 ? "up" : "down";
        field(entry, "tick").textContent = direction === "up" ? "\u25B2" : "\u25BC";
        field(entry, "tick").dataset.direction = direction;
        flash(priceNode, `flash-${direction}`);
      }
      const places = pricePlaces(message.price);
      const price = parseDecimal(message.price);
      const confidence = parseDecimal(message.confidence);
      const bps = price && confidence ? divide(shift(confidence, 4), price, 1) : null;
      field(entry, "confidence").textContent =
        `\u00B1 ${formatDecimal(message.confidence, places)}` + (bps ? ` (${render(bps)} bps)` : "");
      field(entry, "ema").textContent = `EMA ${formatDecimal(message.ema_price, places)}`;
      field(entry, "source").textContent = message.source || "";
      entry.tile.dataset.stale = message.stale ? "true" : "false";
      entry.tile.classList.toggle("stale", Boolean(message.stale));
      showAge(entry);
    }

    function showAge(entry) {
      if (!entry.price) return;
      const age = client.serverNow() - entry.price.publish_time * 1000;
      const node = field(entry, "age");
      node.textContent = `age ${formatAge(age)}`;
      node.title = `Oracle publish time ${formatClock(entry.price.publish_time * 1000)}`;
    }

    function showStats(message) {
      const entry = tiles.get(message.market_id);
      if (!entry) return;
      const base = entry.market.base;
      field(entry, "open_interest_usd").textContent = formatUsd(message.open_interest_usd);
      field(entry, "long_open_interest").textContent = `L ${formatQuantity(message.long_open_interest, 4)} ${base}`;
      field(entry, "short_open_interest").textContent = `${formatQuantity(message.short_open_interest, 4)} ${base} S`;
      field(entry, "open_positions").textContent = String(message.open_positions ?? DASH);
      field(entry, "volume_24h_usd").textContent = formatUsd(message.volume_24h_usd);
      showFunding(entry, message);
      field(entry, "predicted_funding_rate").textContent = formatAnnualRate(message.predicted_funding_rate);
      field(entry, "predicted_funding_rate").title = `${formatPercent(message.predicted_funding_rate, 8, { plus: true })} per hour`;
      const long = parseDecimal(message.long_open_interest);
      const short = parseDecimal(message.short_open_interest);
      const share = long && short ? divide(shift(long, 2), add(long, short), 1) : null;
      const bar = field(entry, "skew-long");
      bar.style.width = share ? `${render(share)}%` : "50%";
      bar.parentElement.classList.toggle("empty", !share);
      bar.parentElement.title = share ? `Longs hold ${render(share)}% of open interest` : "No open interest";
    }

    function showFunding(entry, message) {
      const node = field(entry, "funding_rate");
      node.textContent = formatAnnualRate(message.funding_rate);
      node.title = `${formatPercent(message.funding_rate, 8, { plus: true })} per hour (positive: longs pay shorts)`;
      node.dataset.value = message.funding_rate;
    }

    function showFundingUpdate(message) {
      const entry = tiles.get(message.market_id);
      if (entry) showFunding(entry, message);
    }

    setInterval(() => tiles.forEach(showAge), 250);
    return { setMarkets, showPrice, showStats, showFundingUpdate, ids: () => [...tiles.keys()] };
  }

  // ------------------------------------------------------------------ positions panel

  const ADDRESS_RE = /^(0x)?[0-9a-fA-F]{40}$/;
  const EVENT_LIMIT = 50;

  function healthCell(text) {
    const level = healthLevel(text);
    return el("td", { class: "num" },
      el("span", { class: `health health-${level}`, "data-level": level, "data-value": text ?? "", text: formatHealth(text) }));
  }

  function pnlCell(text) {
    const value = parseDecimal(text);
    const sign = value === null || value.units === 0n ? "flat" : value.units > 0n ? "gain" : "loss";
    return el("td", { class: `num pnl-${sign}`, text: formatUsd(text, { plus: true }) });
  }

  const sideBadge = (side) => el("span", { class: `side side-${side}`, text: side || DASH });

  function eventKey(message) {
    const ref = message.event;
    return ref ? `${ref.tx_hash}:${ref.log_index}` : null;
  }

  function positionsPanel(client) {
    const form = $("#account-form");
    const input = $("#account-input");
    const clear = $("#account-clear");
    const status = $("#account-status");
    const summary = $("#account-summary");
    const table = $("#positions");
    const body = $("#positions tbody");
    const eventsBlock = $("#events-block");
    const events = $("#events");
    const seenEvents = new Map(); // tx_hash:log_index → list item
    let watched = null; // {channel, user_address}

    function say(text, kind = "") {
      status.textContent = text;
      status.className = `status-line ${kind}`;
    }

    function watch(address) {
      const trimmed = address.trim();
      if (!ADDRESS_RE.test(trimmed)) {
        say("That is not an account address: 40 hex digits, with or without 0x.", "error");
        return;
      }
      const normalized = "0x" + trimmed.replace(/^0x/i, "");
      if (watched && watched.user_address.toLowerCase() === normalized.toLowerCase()) return;
      stop();
      watched = { channel: "positions", user_address: normalized };
      input.value = normalized;
      clear.hidden = false;
      history.replaceState(null, "", `#account=${normalized}`);
      say(`Watching ${normalized}…`);
      client.subscribe(watched);
      document.dispatchEvent(new CustomEvent("perpstream:watch", { detail: normalized }));
    }

    function stop() {
      if (watched) client.unsubscribe(watched);
      watched = null;
      seenEvents.clear();
      events.replaceChildren();
      eventsBlock.hidden = true;
      body.replaceChildren();
      table.hidden = true;
      summary.hidden = true;
    }

    function forget() {
      stop();
      input.value = "";
      clear.hidden = true;
      history.replaceState(null, "", location.pathname + location.search);
      say("Type an account address to watch its positions, or pick one from the candidates below.");
      document.dispatchEvent(new CustomEvent("perpstream:watch", { detail: null }));
    }

    function showPositions(message) {
      if (!watched) return;
      const positions = [...message.positions].sort(byHealth);
      say(`${message.user_address} · ${positions.length} open position${positions.length === 1 ? "" : "s"} · updated ${formatClock(message.ts)}`);
      summary.hidden = false;
      summary.replaceChildren(
        summaryItem("Collateral", formatUsd(message.total_collateral)),
        summaryItem("Unrealized PnL", formatUsd(message.total_unrealized_pnl, { plus: true }), pnlClass(message.total_unrealized_pnl)),
        summaryItem("Equity", formatUsd(message.total_equity)));
      table.hidden = false;
      if (!positions.length) {
        body.replaceChildren(el("tr", { class: "empty-row" }, el("td", { colspan: 12, text: "No open positions for this account." })));
        return;
      }
      body.replaceChildren(...positions.map((p) => {
        const places = pricePlaces(p.entry_price);
        return el("tr", { "data-position-id": p.position_id, "data-market": p.market_id, class: p.stale ? "stale-row" : "" },
          el("td", { title: p.position_id }, el("span", { class: "market-cell", text: marketLabel(p.market_id) })),
          el("td", {}, sideBadge(p.side)),
          el("td", { class: "num", text: formatQuantity(p.size) }),
          el("td", { class: "num", text: formatDecimal(p.entry_price, places) }),
          el("td", { class: "num", text: formatDecimal(p.mark_price, places) }),
          el("td", { class: "num", text: formatUsd(p.collateral) }),
          pnlCell(p.unrealized_pnl),
          el("td", { class: "num", text: formatUsd(p.funding_owed, { plus: true }) }),
          el("td", { class: "num", text: formatUsd(p.equity) }),
          el("td", { class: "num", text: p.leverage == null ? DASH : `${formatDecimal(p.leverage, 2)}\u00D7` }),
          healthCell(p.health_factor),
          el("td", { class: "num", text: formatDecimal(p.liquidation_price, places) }));
      }));
    }

    function showEvent(message) {
      if (!watched) return;
      const key = eventKey(message);
      const existing = key && seenEvents.get(key);
      if (existing && message.type !== "position_reverted") {
        // The same chain event again, now deeper: only its finality changes.
        existing.querySelector(".finality").textContent = message.finality;
        existing.dataset.finality = message.finality;
        return;
      }
      if (existing) {
        existing.dataset.finality = "reverted";
        existing.querySelector(".finality").textContent = "reverted";
      }
      const item = eventItem(message);
      if (key && message.type !== "position_reverted") seenEvents.set(key, item);
      events.prepend(item);
      flash(item, "flash-new");
      while (events.children.length > EVENT_LIMIT) {
        const last = events.lastElementChild;
        for (const [k, node] of seenEvents) if (node === last) seenEvents.delete(k);
        last.remove();
      }
      eventsBlock.hidden = false;
    }

    function refused(spec, error) {
      if (watched && streamKey(spec) === streamKey(watched)) {
        watched = null;
        say(`The server refused ${spec.user_address}: ${error.message}`, "error");
      }
    }

    function resynced(spec, message) {
      if (watched && streamKey(spec) === streamKey(watched)) {
        say(`Stream rebuilt on the server (${message.reason}); fresh snapshot follows…`);
      }
    }

    /** A resume that did not recover: mark the gap in the timeline, where the missing events would be. */
    function missed(spec) {
      if (!watched || streamKey(spec) !== streamKey(watched)) return;
      events.prepend(el("li", { class: "event event-gap", "data-type": "gap" },
        el("time", { text: formatClock(Date.now()) }),
        el("span", { class: "event-detail",
          text: "Reconnected, but the server could not replay what happened while offline: events may be missing here." })));
      eventsBlock.hidden = false;
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      watch(input.value);
    });
    clear.addEventListener("click", forget);
    const fromHash = /^#account=(.+)$/.exec(location.hash);
    if (fromHash) watch(decodeURIComponent(fromHash[1]));

    return { watch, showPositions, showEvent, refused, resynced, missed };
  }

  function byHealth(a, b) {
    const x = parseDecimal(a.health_factor);
    const y = parseDecimal(b.health_factor);
    if (x === null || y === null) return (x === null) - (y === null);
    return compare(x, y);
  }

  function pnlClass(text) {
    const value = parseDecimal(text);
    return value === null || value.units === 0n ? "" : value.units > 0n ? "pnl-gain" : "pnl-loss";
  }

  function summaryItem(label, value, className = "") {
    return el("div", { class: "summary-item" }, el("span", { class: "summary-label", text: label }),
      el("span", { class: `summary-value ${className}`, text: value }));
  }

  const EVENT_TITLES = {
    liquidation_warning: "Liquidation warning",
    position_opened: "Opened",
    position_modified: "Modified",
    position_closed: "Closed",
    position_liquidated: "Liquidated",
    position_reverted: "Reverted by reorg",
  };

  function eventItem(message) {
    const title = EVENT_TITLES[message.type] || message.type;
    const time = el("time", { text: formatClock(message.ts) });
    const market = el("span", { class: "market-cell", text: marketLabel(message.market_id) });
    if (message.type === "liquidation_warning") {
      const places = pricePlaces(message.mark_price);
      return el("li", { class: `event event-warning severity-${message.severity}`, "data-type": message.type,
        "data-severity": message.severity, "data-position-id": message.position_id, "data-offset": message.offset },
        time,
        el("span", { class: `badge severity severity-${message.severity}`, text: message.severity }),
        el("span", { class: "event-title", text: title }), market,
        el("span", { class: "event-detail",
          text: `health ${formatHealth(message.health_factor)} · mark ${formatDecimal(message.mark_price, places)} · liquidation at ${formatDecimal(message.liquidation_price, places)}` }));
    }
    const details = [];
    if (message.side) details.push(message.side);
    if (message.size) details.push(`size ${formatQuantity(message.size)}`);
    const price = message.price || message.entry_price;
    if (price) details.push(`at ${formatPrice(price)}`);
    if (message.realized_pnl) details.push(`PnL ${formatUsd(message.realized_pnl, { plus: true })}`);
    if (message.reward) details.push(`keeper reward ${formatUsd(message.reward)}`);
    if (message.reverted_type) details.push(`undid ${EVENT_TITLES[message.reverted_type] || message.reverted_type}`);
    return el("li", { class: `event event-${message.type}`, "data-type": message.type, "data-finality": message.finality,
      "data-position-id": message.position_id, "data-offset": message.offset },
      time,
      el("span", { class: "badge finality", text: message.finality || "" }),
      el("span", { class: "event-title", text: title }), market,
      el("span", { class: "event-detail", text: details.join(" · ") }));
  }

  // ------------------------------------------------------------------ liquidation candidates

  function candidateStatus(candidate) {
    if (candidate.liquidatable) return el("span", { class: "badge severity-liquidatable", text: "liquidatable" });
    const level = healthLevel(candidate.health_factor);
    if (level === "ok") return el("span", { class: "muted", text: "healthy" });
    return el("span", { class: `badge severity-${level}`, text: level === "unknown" ? "no price" : "at risk" });
  }

  function candidatesTable(onPick) {
    const body = $("#candidates tbody");
    const summary = $("#candidates-summary");
    let watching = null;
    let last = null;

    function show(message) {
      last = message;
      summary.replaceChildren(
        el("span", { class: "chip", "data-field": "total_at_risk", text: `${message.total_at_risk} at risk` }),
        el("span", { class: `chip ${message.total_liquidatable ? "chip-danger" : ""}`, "data-field": "total_liquidatable",
          text: `${message.total_liquidatable} liquidatable` }));
      if (!message.candidates.length) {
        body.replaceChildren(el("tr", { class: "empty-row" }, el("td", { colspan: 10, text: "No open positions." })));
        return;
      }
      body.replaceChildren(...message.candidates.map((c) => {
        const places = pricePlaces(c.mark_price);
        const mine = watching && c.user_address.toLowerCase() === watching;
        const account = el("button", { type: "button", class: "link address", title: `Watch ${c.user_address}`,
          text: shortHex(c.user_address) });
        account.addEventListener("click", () => onPick(c.user_address));
        return el("tr", { "data-position-id": c.position_id, class: mine ? "watched" : "" },
          el("td", {}, account),
          el("td", {}, el("span", { class: "market-cell", text: marketLabel(c.market_id) })),
          el("td", {}, sideBadge(c.side)),
          el("td", { class: "num", text: formatQuantity(c.size) }),
          healthCell(c.health_factor),
          el("td", { class: "num", text: formatDecimal(c.liquidation_price, places) }),
          el("td", { class: "num", text: formatDecimal(c.mark_price, places) }),
          el("td", { class: "num", text: c.distance_pct == null ? DASH : `${formatDecimal(c.distance_pct, 2)}%` }),
          el("td", { class: "num", text: formatUsd(c.potential_reward) }),
          el("td", {}, candidateStatus(c)));
      }));
    }

    function setWatching(address) {
      watching = address ? address.toLowerCase() : null;
      if (last) show(last);
    }

    return { show, setWatching };
  }

  // ------------------------------------------------------------------ start-up

  function start() {
    const base = new URL(".", document.baseURI);
    const wsUrl = new URL("api/v1/ws", base);
    wsUrl.protocol = wsUrl.protocol === "https:" ? "wss:" : "ws:";

    let tiles, panel, candidates;

    async function prepare() {
      // The market list can change across a server restart: read it before every connect.
      const response = await fetch(new URL("api/v1/markets", base), { cache: "no-store" });
      if (!response.ok) throw new Error(`markets: HTTP ${response.status}`);
      const { markets } = await response.json();
      const before = new Set(tiles.ids());
      tiles.setMarkets(markets);
      for (const market of markets) {
        if (market.price) tiles.showPrice(market.price);
        if (market.stats) tiles.showStats(market.stats);
        before.delete(market.market_id);
        client.subscribe({ channel: "prices", market_id: market.market_id });
        client.subscribe({ channel: "market_stats", market_id: market.market_id });
      }
      for (const gone of before) {
        client.unsubscribe({ channel: "prices", market_id: gone });
        client.unsubscribe({ channel: "market_stats", market_id: gone });
      }
    }

    function dispatch(message) {
      switch (message.type) {
        case "price_update": tiles.showPrice(message); break;
        case "market_stats": tiles.showStats(message); break;
        case "funding_rate_update": tiles.showFundingUpdate(message); break;
        case "liquidation_alert": candidates.show(message); break;
        case "positions_update": panel.showPositions(message); break;
        case "liquidation_warning":
        case "position_opened":
        case "position_modified":
        case "position_closed":
        case "position_liquidated":
        case "position_reverted":
          panel.showEvent(message);
          break;
        default: break; // newer message types: ignore, the contract only adds
      }
    }

    const client = new StreamClient({
      url: wsUrl.href,
      prepare,
      onMessage: dispatch,
      onState: (state) => showState(state),
      onRefused: (spec, error) => panel.refused(spec, error),
      onResync: (spec, message) => panel.resynced(spec, message),
      onMissed: (spec) => panel.missed(spec),
    });
    const showState = connectionView(client);
    tiles = marketTiles(client);
    candidates = candidatesTable((address) => panel.watch(address));
    document.addEventListener("perpstream:watch", (event) => candidates.setWatching(event.detail));
    panel = positionsPanel(client);
    client.subscribe({ channel: "liquidations" });
    client.start();
  }

  // Exposed for the browser tests of exact formatting; the page does not need it.
  window.perpstreamFormat = {
    formatDecimal, formatPrice, formatQuantity, formatUsd, formatPercent, formatAnnualRate, formatHealth, healthLevel,
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
