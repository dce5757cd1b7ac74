// Boardroom live dashboard. Reads /admin/stats/stream (Server-Sent Events)
// with fetch, so the operator token travels in the Authorization header and
// never in a URL; the token is kept in sessionStorage only.
"use strict";

(function () {
  const TOKEN_KEY = "boardroom.operatorToken";
  const HISTORY = 180; // sparkline points: 3 minutes at one snapshot per second
  const series = new Map(); // service name -> [{p50, p95, p99}]
  let updates = 0;
  let controller = null;
  let retryDelay = 1000;

  const $ = (id) => document.getElementById(id);

  function takeTokenFromFragment() {
    const match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      window.history.replaceState(null, "", window.location.pathname);
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("forget").hidden = true;
    $("login-error").textContent = message || "";
    setStatus("error", message || "token needed");
  }

  function setStatus(status, text) {
    const el = $("status");
    el.dataset.status = status;
    el.textContent = text;
  }

  function fmtMs(ms) {
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    if (ms >= 10) return ms.toFixed(0) + " ms";
    return ms.toFixed(1) + " ms";
  }

  function fmtPct(fraction) {
    return (fraction * 100).toFixed(1) + " %";
  }

  function field(tile, name) {
    return tile.querySelector('[data-field="' + name + '"]');
  }

  function tileFor(service) {
    let tile = document.querySelector('.tile[data-service="' + CSS.escape(service.name) + '"]');
    if (!tile) {
      tile = $("tile-template").content.firstElementChild.cloneNode(true);
      tile.dataset.service = service.name;
      field(tile, "name").textContent = service.name;
      field(tile, "kind").textContent = service.kind;
      $("tiles").appendChild(tile);
    }
    return tile;
  }

  function sparkline(tile, name, requests) {
    let points = series.get(name);
    if (!points) {
      points = [];
      series.set(name, points);
    }
    points.push(requests ? { p50: requests.p50Ms, p95: requests.p95Ms, p99: requests.p99Ms } : { p50: 0, p95: 0, p99: 0 });
    if (points.length > HISTORY) points.shift();
    const max = Math.max(1, ...points.map((p) => p.p99));
    for (const q of ["p50", "p95", "p99"]) {
      const line = points
        .map((p, i) => (HISTORY - points.length + i) + "," + (40 - (p[q] / max) * 38 - 1).toFixed(1))
        .join(" ");
      tile.querySelector("polyline." + q).setAttribute("points", line);
    }
  }

  function renderTile(service) {
    const tile = tileFor(service);
    const breaker = service.breaker;
    const state = breaker ? breaker.state : "none";
    tile.dataset.state = state;
    const badge = field(tile, "breaker");
    badge.textContent = breaker ? state.replace("_", " ") : "no breaker";
    badge.className = "breaker state-" + state;

    const r = service.requests;
    // A dependency has no request figures of its own: show its breaker's window.
    field(tile, "count").textContent = r ? String(r.count) : breaker ? String(breaker.calls) : "–";
    field(tile, "rate").textContent = r ? r.ratePerSecond.toFixed(1) + "/s" : "–";
    field(tile, "error-rate").textContent = r ? fmtPct(r.errorRate) : breaker ? fmtPct(breaker.failureRate) : "–";
    field(tile, "p50").textContent = r ? fmtMs(r.p50Ms) : "–";
    field(tile, "p95").textContent = r ? fmtMs(r.p95Ms) : "–";
    field(tile, "p99").textContent = r ? fmtMs(r.p99Ms) : "–";
    sparkline(tile, service.name, r);

    const c = service.concurrency;
    const inFlightBar = field(tile, "in-flight-bar");
    const queueBar = field(tile, "queue-bar");
    if (c) {
      inFlightBar.max = Math.max(1, c.limit);
      inFlightBar.value = c.inFlight;
      field(tile, "in-flight").textContent = c.inFlight + " / " + c.limit;
      queueBar.max = Math.max(1, c.maxQueue);
      queueBar.value = c.queued;
      field(tile, "queue").textContent = c.queued + " / " + c.maxQueue;
    } else {
      field(tile, "in-flight").textContent = r ? r.inFlight + " (no limit)" : "–";
      field(tile, "queue").textContent = "no queue";
    }

    const cache = service.cache;
    field(tile, "cache").textContent = cache
      ? "cache hit rate " + fmtPct(cache.hitRate) + " · " + cache.entries + " entries"
      : "no cache";

    const budget = field(tile, "budget");
    const b = service.budget;
    if (b) {
      budget.dataset.status = b.status;
      const limits = b.limits
        .map((l) => l.budget + (l.breached ? " over" : " ok"))
        .join(", ");
      budget.textContent = "budget " + b.status + " (" + limits + ")";
    } else {
      budget.dataset.status = "none";
      budget.textContent = "no budget";
    }
  }

  function renderAlerts(alerts) {
    const list = $("alerts");
    list.replaceChildren();
    $("alert-count").textContent = String(alerts.length);
    if (alerts.length === 0) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "none";
      list.appendChild(li);
      return;
    }
    for (const alert of alerts) {
      const li = document.createElement("li");
      li.dataset.alert = alert.id;
      li.dataset.operation = alert.operation;
      li.dataset.budget = alert.budget;
      li.textContent = alert.text + " — since " + new Date(alert.since).toLocaleTimeString();
      list.appendChild(li);
    }
  }

  function render(stats) {
    for (const service of stats.services) renderTile(service);
    renderAlerts(stats.alerts);
    setStatus(stats.status, stats.status);
    updates += 1;
    document.body.dataset.updates = String(updates);
    $("updated").textContent = "updated " + new Date(stats.at).toLocaleTimeString() + " (" + updates + " updates)";
  }

  // Splits an SSE byte stream into events and hands each `stats` one to render.
  async function consume(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        let event = "message";
        const data = [];
        for (const line of frame.split(/\r?\n/)) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (event === "stats" && data.length > 0) {
          render(JSON.parse(data.join("\n")));
          retryDelay = 1000;
        }
      }
    }
  }

  async function connect() {
    const t = token();
    if (!t) {
      showLogin("");
      return;
    }
    $("login").hidden = true;
    $("forget").hidden = false;
    document.body.dataset.connection = "connecting";
    controller = new AbortController();
    try {
      const response = await fetch("/admin/stats/stream", {
        headers: { Authorization: "Bearer " + t, Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401 || response.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        const body = await response.json().catch(() => null);
        showLogin((body && body.error && body.error.message) || "not an operator token");
        document.body.dataset.connection = "refused";
        return;
      }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      document.body.dataset.connection = "live";
      await consume(response.body);
      throw new Error("stream ended");
    } catch (error) {
      if (controller.signal.aborted) return;
      document.body.dataset.connection = "retrying";
      setStatus("error", "disconnected (" + error.message + "); retrying");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    }
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    connect();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (controller) controller.abort();
    showLogin("");
  });

  takeTokenFromFragment();
  connect();
})();
