#!/usr/bin/env python3
"""Turns benches/run.sh results into BENCHMARKS.md (stdout) and PNG plots in benches/plots/."""
import json, os, platform, re, subprocess, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "results.jsonl")) if l.strip().startswith("{")]

# Repeated runs are labelled `name#k`: keep the median one under `name` (by throughput for a
# closed loop, by submit→offer p99 for an open one) and remember every run's figure.
repeats = {}
for r in rows:
    base = str(r.get("label", "")).split("#")[0]
    if "#" in str(r.get("label", "")):
        repeats.setdefault(base, []).append(r)
def key(r):
    return r["throughput_per_s"] if r["mode"] == "closed" else r["submit_to_offer"]["p99_ms"]
rows = [r for r in rows if "#" not in str(r.get("label", ""))]
for base, runs in repeats.items():
    runs.sort(key=key)
    median = dict(runs[len(runs) // 2], label=base, repeats=[key(r) for r in runs])
    rows.append(median)
order = {"memory-throughput": 0, "memory-1000ps-10k": 1, "redis-throughput": 2, "redis-1000ps-10k": 3}
rows.sort(key=lambda r: order.get(r.get("label"), 9))
by = {r.get("label", r.get("mode")): r for r in rows}
grpc = next(r for r in rows if r.get("mode") == "grpc_floor")
rfloor = next(r for r in rows if r.get("mode") == "redis_floor")

def dur(s):
    m = re.match(r"([0-9.]+)(ns|µs|us|ms|s)$", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"ns": 1e-3, "µs": 1, "us": 1, "ms": 1e3, "s": 1e6}[u]

sel = []
for line in open(os.path.join(out, "selection.txt")):
    p = line.split()
    if len(p) >= 6 and p[0].isdigit():
        sel.append({"agents": int(p[0]), "idx50": dur(p[1]), "idx99": dur(p[2]), "scan50": dur(p[4]), "scan99": dur(p[5]),
                    "same": p[7] if len(p) > 7 else "", "gap": p[8] if len(p) > 8 else ""})
mem = open(os.path.join(out, "redis-memory.txt")).read()
per_agent_log = re.search(r"bytes_per_agent=(\d+)", mem)
per_agent_nolog = re.search(r"without the change log: delta=\d+ bytes_per_agent=(\d+)", mem)

def mark(ok):
    return "**met**" if ok else "**not met**"

cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print("# Benchmarks\n")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
      f"{platform.system()} {platform.release()}; load generator, dispatcher and Redis on the same machine.\n")
print("Reproduce everything below with `benches/run.sh` (release build; about 10 minutes). Dispatcher settings for the "
      "runs: `--dev` (plaintext, no tokens), wrap-up 0 so that capacity cycles, rescan 1 s; everything else default.\n")

print("## Floors of this machine, same run\n")
print("| floor | calls/s | p50 | p99 |\n|---|---:|---:|---:|")
print(f"| gRPC unary echo (tonic, 160-byte payload, 64 in flight) | {grpc['calls_per_s']:.0f} | {grpc['latency']['p50_ms']:.3f} ms | {grpc['latency']['p99_ms']:.3f} ms |")
print(f"| Redis FCALL of a trivial Function (64 in flight) | {rfloor['calls_per_s']:.0f} | {rfloor['latency']['p50_ms']:.3f} ms | {rfloor['latency']['p99_ms']:.3f} ms |\n")

print("## End to end\n")
print("| run | agents | load | assigned/s | × gRPC floor | submit→offer p50 / p99 / p99.9 | submit→assigned p50 / p99 | accept→confirmed p50 / p99 |")
print("|---|---:|---|---:|---:|---|---|---|")
for label, r in by.items():
    if r.get("mode") not in ("open", "closed"):
        continue
    load = f"{r['rate']}/s open" if r["mode"] == "open" else f"{r['concurrency']} in flight"
    o, a, c = r["submit_to_offer"], r["submit_to_assigned"], r["accept_to_confirmed"]
    shared = f" ({r['agents'] // r['agents_per_connection']} connections)" if r.get("agents_per_connection", 1) > 1 else ""
    print(f"| {label} | {r['agents']}{shared} | {load} | {r['throughput_per_s']:.0f} | {r['throughput_per_s'] / grpc['calls_per_s']:.2f} | "
          f"{o['p50_ms']:.2f} / {o['p99_ms']:.2f} / {o['p999_ms']:.2f} ms | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} ms | {c['p50_ms']:.2f} / {c['p99_ms']:.2f} ms |")
reps = [(label, r) for label, r in by.items() if r.get("repeats")]
if reps:
    print("\nRepeated runs (a fresh dispatcher each; the table shows the median one):\n")
for label, r in reps:
    closed = r["mode"] == "closed"
    figures = " / ".join(f"{v:.0f}" if closed else f"{v:.2f}" for v in r["repeats"])
    print(f"- `{label}`: {'assigned/s' if closed else 'submit→offer p99, ms'} {figures}")
print("\nCases that found no eligible available agent wait (a rare language, skill or a VIP case), so the tail of submit→offer "
      "includes queueing time by design; `unassigned` in the JSON lines counts those still waiting at the end.\n")

print("## Selection (best agent for a case)\n")
print("| agents | index p50 | index p99 | exact scan p50 | exact scan p99 | same pick | score given up |\n|---:|---:|---:|---:|---:|---:|---:|")
for s in sel:
    print(f"| {s['agents']} | {s['idx50']:.1f} µs | {s['idx99']:.1f} µs | {s['scan50']:.0f} µs | {s['scan99']:.0f} µs | {s['same']} | {s['gap']} |")

# Criterion medians (target/criterion/<group>/<impl>/<n>/new/estimates.json, nanoseconds).
crit = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")
micro = {}
for group in ["best_agent_for_case", "best_case_for_agent"]:
    for impl in ["index", "linear_scan"]:
        d = os.path.join(crit, group, impl)
        if not os.path.isdir(d):
            continue
        for n in os.listdir(d):
            f = os.path.join(d, n, "new", "estimates.json")
            if n.isdigit() and os.path.exists(f):
                e = json.load(open(f))
                micro[(group, impl, int(n))] = (e["median"]["point_estimate"], e["median"]["confidence_interval"])
if micro:
    print("\n## Micro benchmarks (criterion, same run: the index against a linear scan over the same data)\n")
    print("Median time per call with criterion's 95% confidence interval (`cargo bench -p dispatch-benches --bench micro`).\n")
    print("| benchmark | size | index | linear scan | speed-up |\n|---|---:|---:|---:|---:|")
    def us(x):
        return f"{x / 1000:.1f} µs" if x < 1e6 else f"{x / 1e6:.1f} ms"
    for group, what in [("best_agent_for_case", "agents (10% available)"), ("best_case_for_agent", "waiting cases")]:
        for n in sorted({k[2] for k in micro if k[0] == group}):
            i, s = micro.get((group, "index", n)), micro.get((group, "linear_scan", n))
            if i and s:
                ci = f"{us(i[0])} ({us(i[1]['lower_bound'])}–{us(i[1]['upper_bound'])})"
                cs = f"{us(s[0])} ({us(s[1]['lower_bound'])}–{us(s[1]['upper_bound'])})"
                print(f"| {group.replace('_', ' ')} | {n:,} {what} | {ci} | {cs} | {s[0] / i[0]:.0f}× |")

allconn = sorted([r for r in rows if r.get("mode") == "connect"], key=lambda r: (r.get("agents_per_connection", 1), r["agents"]))
conn = [r for r in allconn if r.get("agents_per_connection", 1) == 1]
shared = [r for r in allconn if r.get("agents_per_connection", 1) > 1]
print("\n## Connections and memory\n")
print("Dispatcher RSS after the agents connected, less RSS before (the agents were registered before): what a connected, "
      "available agent costs beyond its registration.\n")
print("| connected agents | gRPC connections | dispatcher RSS | bytes per connected agent |\n|---:|---:|---:|---:|")
for r in allconn:
    print(f"| {r['agents']} | {r['agents'] // r.get('agents_per_connection', 1)} | {r['rss_after_kib'] / 1024:.0f} MiB | {r['rss_bytes_per_agent']:.0f} |")
print("\nA process may hold at most 20,000 open files on this machine (hard limit; raising it needs CAP_SYS_RESOURCE, "
      "which this machine does not grant), so the own-connection runs stop at 18,000. The runs with several agents per "
      "connection (each agent still its own stream and session) show the dispatcher carrying 50,000 signed-in agents.")
if per_agent_log:
    print(f"\nRedis memory per registered, signed-in agent (100k agents, `INFO memory` before and after): "
          f"{per_agent_nolog.group(1)} bytes (record, roster entry, lease timer), {per_agent_log.group(1)} bytes including the bounded change log.\n")

def get(label, *path):
    r = by.get(label)
    for p in path:
        r = None if r is None else r.get(p)
    return r

print("## Targets\n")
print("| target | figure | verdict |\n|---|---|---|")
t = get("memory-throughput", "throughput_per_s") or 0
print(f"| embedded store throughput ≥ 0.25 × gRPC floor | {t:.0f}/s = {t / grpc['calls_per_s']:.2f} × | {mark(t >= 0.25 * grpc['calls_per_s'])} |")
t = get("redis-throughput", "throughput_per_s") or 0
print(f"| Redis store throughput ≥ 0.15 × gRPC floor | {t:.0f}/s = {t / grpc['calls_per_s']:.2f} × | {mark(t >= 0.15 * grpc['calls_per_s'])} |")
p = get("memory-1000ps-10k", "submit_to_offer", "p99_ms") or 1e9
print(f"| submit→offer p99 ≤ 2 ms at 1,000/s, 10k agents (embedded) | {p:.2f} ms | {mark(p <= 2)} |")
p = get("redis-1000ps-10k", "submit_to_offer", "p99_ms") or 1e9
print(f"| submit→offer p99 ≤ 5 ms at 1,000/s, 10k agents (Redis) | {p:.2f} ms | {mark(p <= 5)} |")
big = sel[-1] if sel else None
if big:
    print(f"| selection at {big['agents']:,} agents p99 ≤ 50 µs | {big['idx99']:.0f} µs | {mark(big['agents'] >= 1_000_000 and big['idx99'] <= 50)} |")
    print(f"| selection ≥ 10× faster than the scan | {big['scan50'] / big['idx50']:.0f}× (p50) | {mark(big['scan50'] / big['idx50'] >= 10)} |")
    growth = (big["idx50"] / sel[0]["idx50"]) / (big["agents"] / sel[0]["agents"])
    print(f"| selection grows sub-linearly | ×{big['idx50'] / sel[0]['idx50']:.0f} time for ×{big['agents'] // sel[0]['agents']} agents | {mark(growth < 0.5)} |")
most = conn[-1] if conn else None
if most:
    big_shared = shared[-1] if shared else None
    extra = ""
    if big_shared:
        extra = (f"; {big_shared['agents']:,} agents over {big_shared['agents'] // big_shared['agents_per_connection']:,} connections: "
                 f"{big_shared['rss_bytes_per_agent'] / 1024:.1f} KiB per agent")
        loaded = next((r for r in rows if r.get("mode") == "open" and r.get("agents") == big_shared["agents"]), None)
        if loaded:
            extra += f", {loaded['throughput_per_s']:.0f} cases/s with submit→offer p99 {loaded['submit_to_offer']['p99_ms']:.2f} ms"
    print(f"| ≥ 50,000 concurrent agent connections | {most['agents']:,} own connections measured (the machine's hard limit is 20,000 open files per process){extra} | **not measured** (as connections) |")
    print(f"| ≤ 32 KiB RSS per connected agent | {most['rss_bytes_per_agent'] / 1024:.1f} KiB at {most['agents']:,} | {mark(most['rss_bytes_per_agent'] <= 32 * 1024)} |")
if per_agent_log:
    print(f"| Redis ≤ 1 KiB per registered agent | {per_agent_log.group(1)} B | {mark(int(per_agent_log.group(1)) <= 1024)} |")

# Plots.
os.makedirs("benches/plots", exist_ok=True)
rates = sorted([r for r in rows if str(r.get("label", "")).startswith("memory-rate-")], key=lambda r: r["rate"])
if rates:
    plt.figure(figsize=(6, 4))
    for q, name in [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]:
        plt.plot([r["rate"] for r in rates], [r["submit_to_offer"][q] for r in rates], marker="o", label=f"submit→offer {name}")
    plt.yscale("log"); plt.xlabel("cases per second (open loop, 5k agents, embedded store)"); plt.ylabel("ms"); plt.legend(); plt.grid(alpha=.3)
    plt.title("Latency vs load"); plt.tight_layout(); plt.savefig("benches/plots/latency_vs_load.png", dpi=110)
if sel:
    plt.figure(figsize=(6, 4))
    xs = [s["agents"] for s in sel]
    plt.plot(xs, [s["idx50"] for s in sel], marker="o", label="index p50"); plt.plot(xs, [s["idx99"] for s in sel], marker="o", label="index p99")
    plt.plot(xs, [s["scan50"] for s in sel], marker="s", label="linear scan p50"); plt.plot(xs, [s["scan99"] for s in sel], marker="s", label="linear scan p99")
    plt.xscale("log"); plt.yscale("log"); plt.xlabel("agents in the pool (10% available)"); plt.ylabel("µs per selection"); plt.legend(); plt.grid(alpha=.3)
    plt.title("Selection time vs pool size"); plt.tight_layout(); plt.savefig("benches/plots/selection_vs_pool.png", dpi=110)
if conn:
    plt.figure(figsize=(6, 4))
    plt.plot([r["agents"] for r in conn], [r["rss_after_kib"] / 1024 for r in conn], marker="o")
    plt.xlabel("connected agents (one gRPC connection and stream each)"); plt.ylabel("dispatcher RSS, MiB"); plt.grid(alpha=.3)
    plt.title("RSS vs connected agents"); plt.tight_layout(); plt.savefig("benches/plots/rss_vs_agents.png", dpi=110)
profile = os.path.join(os.path.dirname(os.path.abspath(__file__)), "PROFILE.md")
if os.path.exists(profile):
    print("\n" + open(profile).read())
print("\n## Plots\n")
print("![latency vs load](benches/plots/latency_vs_load.png)\n\n![selection vs pool size](benches/plots/selection_vs_pool.png)\n\n![RSS vs connected agents](benches/plots/rss_vs_agents.png)")
