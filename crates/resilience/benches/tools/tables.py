#!/usr/bin/env python3
"""Turn criterion's target/criterion/**/new/{benchmark,estimates}.json into
markdown tables: one per group, median per call, ratio to the group's `bare`
row and to the named peer rows. Usage: tables.py [target/criterion]"""
import json, os, sys, collections

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
# The row of our layer in each group; "÷ ours" = that row's median / ours.
OURS = {"ours", "resilience", "resilience get_or_load", "stack (noop recorder)"}
rows = collections.OrderedDict()
for dirpath, _, files in sorted(os.walk(root)):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
        continue
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    est = json.load(open(os.path.join(dirpath, "estimates.json")))
    full = bench["full_id"]
    group, _, name = full.rpartition("/")
    m = est["median"]
    rows.setdefault(group, []).append(
        (name, m["point_estimate"], m["confidence_interval"]["lower_bound"], m["confidence_interval"]["upper_bound"]))

def fmt(ns):
    return f"{ns/1000:.2f} µs" if ns >= 1000 else (f"{ns:.1f} ns" if ns >= 10 else f"{ns:.2f} ns")

for group, items in rows.items():
    bare = next((v for n, v, *_ in items if n == "bare"), None)
    ours = next((v for n, v, *_ in items if n in OURS), None)
    print(f"\n### `{group}`\n")
    print("| bench | median / call | 95% CI of median | × bare | ÷ ours |")
    print("|---|---:|---:|---:|---:|")
    for name, v, lo, hi in items:
        ratio = f"{v/bare:.1f}×" if bare else "—"
        vs = f"{v/ours:.2f}" if ours else "—"
        print(f"| {name} | {fmt(v)} | {fmt(lo)} – {fmt(hi)} | {ratio} | {vs} |")
