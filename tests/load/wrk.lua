-- wrk script for tests/load/users.sh.
--
-- Headers come from the environment, so one script serves every target:
--   WRK_TOKEN   if set, sent as `Authorization: Bearer $WRK_TOKEN` (the service)
--   WRK_VIEWER  if set, sent as `x-viewer-id: $WRK_VIEWER` (plain-search)
-- At the end it prints one machine-readable line starting with `@@` that
-- users.sh parses (latencies in milliseconds; non2xx counts answers >= 400).

local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local viewer = os.getenv("WRK_VIEWER")
if viewer and viewer ~= "" then
  wrk.headers["x-viewer-id"] = viewer
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "@@ requests=%d seconds=%.3f rps=%.1f p50=%.3f p90=%.3f p99=%.3f max=%.3f non2xx=%d socket_errors=%d\n",
    summary.requests,
    summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000,
    latency:percentile(90) / 1000,
    latency:percentile(99) / 1000,
    latency.max / 1000,
    e.status,
    e.connect + e.read + e.write + e.timeout))
end
