#!/usr/bin/env node
// Drives headless Chromium over the DevTools protocol (--remote-debugging-pipe:
// NUL-separated JSON on fds 3 and 4, so no npm package is needed) to read the
// live DOM of the Boardroom dashboard. Used by tests/dashboard.rs.
//
//   node read-dom.js --chromium /usr/bin/chromium --url URL --reads 2 \
//        --gap-ms 3000 --timeout-ms 60000 --screenshot out.png
//
// Prints one JSON line per read: {connection, updates, status, loginVisible,
// loginError, alerts, tiles: {name: {state, breaker, count, rate, budget}}}.
// The first read waits until the page has rendered two snapshots (or was
// refused); each later read waits `gap-ms` and then for a newer snapshot.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

function args() {
  const out = { reads: 2, gapMs: 3000, timeoutMs: 60000, chromium: "/usr/bin/chromium" };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    out[key] = ["reads", "gapMs", "timeoutMs"].includes(key) ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!out.url) throw new Error("--url is required");
  return out;
}

const READ = `(() => {
  const tiles = {};
  for (const tile of document.querySelectorAll(".tile[data-service]")) {
    const text = (f) => { const el = tile.querySelector('[data-field="' + f + '"]'); return el ? el.textContent.trim() : null; };
    tiles[tile.dataset.service] = {
      state: tile.dataset.state || null,
      breaker: text("breaker"),
      count: Number(text("count")),
      rate: text("rate"),
      latency: [text("p50"), text("p95"), text("p99")],
      inFlight: text("in-flight"),
      queue: text("queue"),
      cache: text("cache"),
      budget: text("budget"),
      sparkline: (tile.querySelector("polyline.p99") || { getAttribute: () => "" }).getAttribute("points").split(" ").filter(Boolean).length,
    };
  }
  return JSON.stringify({
    connection: document.body.dataset.connection,
    updates: Number(document.body.dataset.updates || 0),
    status: document.getElementById("status").textContent,
    loginVisible: !document.getElementById("login").hidden,
    loginError: document.getElementById("login-error").textContent,
    alerts: document.querySelectorAll("#alerts li[data-alert]").length,
    location: window.location.href,
    tiles,
  });
})()`;

async function main() {
  const opts = args();
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "boardroom-chromium-"));
  const chrome = spawn(
    opts.chromium,
    [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-dev-shm-usage",
      `--user-data-dir=${userDataDir}`,
      "--remote-debugging-pipe",
      "--window-size=1400,1000",
      "about:blank",
    ],
    { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  chrome.stdio[2].on("data", (d) => { stderr += d; });
  const toChrome = chrome.stdio[3];
  const fromChrome = chrome.stdio[4];

  let nextId = 1;
  const pending = new Map();
  let buffer = "";
  fromChrome.on("data", (chunk) => {
    buffer += chunk.toString("utf8");
    let end;
    while ((end = buffer.indexOf("\0")) >= 0) {
      const message = JSON.parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
      if (message.id && pending.has(message.id)) {
        const { resolve, reject } = pending.get(message.id);
        pending.delete(message.id);
        if (message.error) reject(new Error(JSON.stringify(message.error)));
        else resolve(message.result);
      }
    }
  });
  const send = (method, params = {}, sessionId) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      toChrome.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + "\0");
    });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + opts.timeoutMs;
  const killer = setTimeout(() => {
    console.error("read-dom: timed out; chromium stderr:\n" + stderr.slice(-4000));
    chrome.kill("SIGKILL");
    process.exit(2);
  }, opts.timeoutMs + 10000);

  try {
    const { targetId } = await send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
    await send("Page.enable", {}, sessionId);
    await send("Runtime.enable", {}, sessionId);
    await send("Page.navigate", { url: opts.url }, sessionId);
    const read = async () => {
      const { result, exceptionDetails } = await send(
        "Runtime.evaluate",
        { expression: READ, returnByValue: true },
        sessionId,
      );
      if (exceptionDetails) return null;
      return JSON.parse(result.value);
    };
    let last = null;
    for (let n = 0; n < opts.reads; n++) {
      if (n > 0) await sleep(opts.gapMs);
      const wanted = last ? last.updates + 1 : 2;
      for (;;) {
        const dom = await read().catch(() => null);
        if (dom && (dom.connection === "refused" || dom.updates >= wanted)) {
          last = dom;
          break;
        }
        if (Date.now() > deadline) throw new Error("page never rendered; last DOM: " + JSON.stringify(dom));
        await sleep(200);
      }
      process.stdout.write(JSON.stringify(last) + "\n");
    }
    if (opts.screenshot) {
      const { data } = await send("Page.captureScreenshot", { format: "png" }, sessionId);
      fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
      fs.writeFileSync(opts.screenshot, Buffer.from(data, "base64"));
    }
    await send("Browser.close").catch(() => {});
  } catch (error) {
    console.error("read-dom: " + error.message + "\nchromium stderr:\n" + stderr.slice(-4000));
    process.exitCode = 1;
  } finally {
    clearTimeout(killer);
    const exited = new Promise((r) => chrome.once("exit", r));
    if (chrome.exitCode === null) {
      setTimeout(() => chrome.kill("SIGKILL"), 5000).unref();
      await exited;
    }
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
