#!/usr/bin/env python3
"""Turns the files of one tests/bench/run.sh run into bench-results.json and a
Markdown table on stdout. Usage: report.py RUN_DIR OUT_JSON"""

import json
import os
import re
import sys

run, out_path = sys.argv[1], sys.argv[2]


def load(name):
    p = os.path.join(run, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        text = f.read().strip()
    if name.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            # little-traffic.json holds several objects, one per line
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    return text


def num(name):
    t = load(name)
    try:
        return int(t) if t else None
    except ValueError:
        return None


def wrk(name):
    t = load(f"wrk-{name}.txt")
    if not t:
        return None
    r = {"raw": t}
    m = re.search(r"Requests/sec:\s+([\d.]+)", t)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:(.*)", t)
    r["socket_errors"] = m.group(1).strip() if m else None
    m = re.search(r"(\d+) requests in", t)
    r["requests"] = int(m.group(1)) if m else None
    return r


def criterion(name):
    d = load(f"criterion-{name}.json")
    if not d:
        return None
    return {
        "mean_ns": d["mean"]["point_estimate"],
        "mean_ci_ns": [
            d["mean"]["confidence_interval"]["lower_bound"],
            d["mean"]["confidence_interval"]["upper_bound"],
        ],
        "median_ns": d["median"]["point_estimate"],
    }


res = {
    "machine": load("machine.json"),
    # keygate's runs alternate with direct requests: "direct" is their baseline.
    "latency_c1": {
        "direct": (load("latency-keygate.json") or {}).get("baseline"),
        "keygate": load("latency-keygate.json"),
        "direct_alongside_limited": (load("latency-keygate-limited.json") or {}).get("baseline"),
        "keygate_limited": load("latency-keygate-limited.json"),
        "direct_alongside_litellm": (load("latency-litellm.json") or {}).get("baseline"),
        "litellm": load("latency-litellm.json"),
        "direct_alongside_nginx": (load("latency-nginx.json") or {}).get("baseline"),
        "nginx": load("latency-nginx.json"),
    },
    "stream_ttfb_c1": {
        "direct": (load("ttfb-keygate.json") or {}).get("baseline"),
        "keygate": load("ttfb-keygate.json"),
        "direct_alongside_nginx": (load("ttfb-nginx.json") or {}).get("baseline"),
        "nginx": load("ttfb-nginx.json"),
    },
    "throughput": {
        "direct": load("tput-direct.json"),
        "keygate": load("tput-keygate.json"),
        "keygate_limited": load("tput-keygate-limited.json"),
        "litellm": load("tput-litellm.json"),
        "litellm_nproc_workers": load("tput-litellm-nproc.json"),
        "nginx": load("tput-nginx.json"),
    },
    "wrk": {n: wrk(n) for n in ("direct", "keygate", "litellm", "nginx")},
    # Scaling phase: keygate and nginx restarted with each worker count.
    "workers": {
        w: {
            "latency_keygate": load(f"latency-keygate-w{w}.json"),
            "tput_keygate": load(f"tput-keygate-w{w}.json"),
            "latency_nginx": load(f"latency-nginx-w{w}.json"),
            "tput_nginx": load(f"tput-nginx-w{w}.json"),
        }
        for w in ((load("machine.json") or {}).get("workers_list") or "").split()
    },
    "nginx_version": load("nginx-version.txt"),
    "nginx_skipped": load("nginx-skipped.txt"),
    "memory": {
        "start": load("mem-start.json"),
        "idle": load("mem-idle.json"),
        "after_load": load("mem-after-load.json"),
        "hold": load("hold.json"),
        "litellm": load("mem-litellm.json"),
    },
    "unseal": {"unseal": criterion("unseal"), "seal": criterion("seal")},
    "loadavg_before_measuring": load("loadavg-before-measuring.txt"),
    "quiet_checks": (load("quiet.txt") or "").splitlines(),
    "litellm_version": load("litellm-version.txt"),
    "litellm_skipped": load("litellm-skipped.txt"),
    # Issue 14: one node on sled beside one on PostgreSQL, then nginx over 1 and 3
    # PostgreSQL nodes sharing one database.
    "stores": {
        name: {
            "latency": load(f"stores-latency-{name}.json"),
            "throughput": load(f"stores-tput-{name}.json"),
        }
        for name in ("sled", "pg", "lb1", "lb3")
    },
    "pg_version": load("pg-version.txt"),
    "pg_settings": load("pg-settings.txt"),
}


def get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


def sub(a, b):
    return None if a is None or b is None else round(a - b, 1)


lat = res["latency_c1"]
ttfb = res["stream_ttfb_c1"]
tp = res["throughput"]
mem = res["memory"]
kg_rps = get(tp, "keygate", "rps")
ll_rps = get(tp, "litellm", "rps")
per_stream = get(mem, "hold", "per_stream_bytes")
derived = {
    "added_p50_us": sub(get(lat, "keygate", "total_us", "p50"), get(lat, "direct", "total_us", "p50")),
    "added_p99_us": sub(get(lat, "keygate", "total_us", "p99"), get(lat, "direct", "total_us", "p99")),
    "litellm_added_p50_us": sub(get(lat, "litellm", "total_us", "p50"), get(lat, "direct_alongside_litellm", "total_us", "p50")),
    "litellm_added_p99_us": sub(get(lat, "litellm", "total_us", "p99"), get(lat, "direct_alongside_litellm", "total_us", "p99")),
    "ttfb_added_p50_us": sub(get(ttfb, "keygate", "ttfb_us", "p50"), get(ttfb, "direct", "ttfb_us", "p50")),
    "ttfb_added_p99_us": sub(get(ttfb, "keygate", "ttfb_us", "p99"), get(ttfb, "direct", "ttfb_us", "p99")),
    "keygate_over_litellm": (kg_rps / ll_rps) if kg_rps and ll_rps else None,
    "keygate_over_direct": (kg_rps / get(tp, "direct", "rps")) if kg_rps and get(tp, "direct", "rps") else None,
    "wrk_keygate_over_litellm": (
        get(res, "wrk", "keygate", "rps") / get(res, "wrk", "litellm", "rps")
        if get(res, "wrk", "keygate", "rps") and get(res, "wrk", "litellm", "rps")
        else None
    ),
    "per_stream_kb": per_stream / 1024 if per_stream is not None else None,
    "keygate_over_litellm_nproc_workers": (
        kg_rps / get(tp, "litellm_nproc_workers", "rps")
        if kg_rps and get(tp, "litellm_nproc_workers", "rps")
        else None
    ),
}


def ratio(a, b):
    return a / b if a is not None and b else None


def per_core(us_per_req):
    return 1e6 / us_per_req if us_per_req else None


ng_rps = get(tp, "nginx", "rps")
kg_cpu = get(tp, "keygate", "cpu", "keygate", "us_per_req")
ng_cpu = get(tp, "nginx", "cpu", "nginx", "us_per_req")
derived.update({
    "nginx_added_p50_us": sub(get(lat, "nginx", "total_us", "p50"), get(lat, "direct_alongside_nginx", "total_us", "p50")),
    "nginx_added_p99_us": sub(get(lat, "nginx", "total_us", "p99"), get(lat, "direct_alongside_nginx", "total_us", "p99")),
    "nginx_ttfb_added_p50_us": sub(get(ttfb, "nginx", "ttfb_us", "p50"), get(ttfb, "direct_alongside_nginx", "ttfb_us", "p50")),
    "nginx_ttfb_added_p99_us": sub(get(ttfb, "nginx", "ttfb_us", "p99"), get(ttfb, "direct_alongside_nginx", "ttfb_us", "p99")),
    "keygate_cpu_us_per_req": kg_cpu,
    "nginx_cpu_us_per_req": ng_cpu,
    "keygate_rps_per_core_est": per_core(kg_cpu),
    "nginx_rps_per_core_est": per_core(ng_cpu),
})
# Issue 12's targets, keygate ÷ nginx in one run.
derived.update({
    "over_nginx_added_p50": ratio(derived["added_p50_us"], derived["nginx_added_p50_us"]),
    "over_nginx_added_p99": ratio(derived["added_p99_us"], derived["nginx_added_p99_us"]),
    "over_nginx_total_p99": ratio(get(lat, "keygate", "total_us", "p99"), get(lat, "nginx", "total_us", "p99")),
    "over_nginx_total_p50": ratio(get(lat, "keygate", "total_us", "p50"), get(lat, "nginx", "total_us", "p50")),
    "over_nginx_rps": ratio(kg_rps, ng_rps),
    "over_nginx_rps_wrk": ratio(get(res, "wrk", "keygate", "rps"), get(res, "wrk", "nginx", "rps")),
    "over_nginx_ttfb_added_p50": ratio(derived["ttfb_added_p50_us"], derived["nginx_ttfb_added_p50_us"]),
    "over_nginx_ttfb_added_p99": ratio(derived["ttfb_added_p99_us"], derived["nginx_ttfb_added_p99_us"]),
    "over_nginx_cpu_per_req": ratio(kg_cpu, ng_cpu),
})
res["derived"] = derived


def verdict(value, limit, higher_is_better=False):
    if value is None:
        return "not measured"
    ok = value >= limit if higher_is_better else value <= limit
    return "met" if ok else "NOT met"


unseal_us = get(res, "unseal", "unseal", "mean_ns")
unseal_us = unseal_us / 1000 if unseal_us is not None else None
idle_kb = get(mem, "idle", "VmRSS")
idle_mb = idle_kb / 1024 if idle_kb else None
targets = [
    ("Added latency p99, non-stream, c=1", derived["added_p99_us"], "≤ 250 µs", verdict(derived["added_p99_us"], 250), "µs"),
    ("Added time to first SSE byte p99, c=1", derived["ttfb_added_p99_us"], "≤ 500 µs", verdict(derived["ttfb_added_p99_us"], 500), "µs"),
    ("Throughput c=64, keygate ÷ LiteLLM", derived["keygate_over_litellm"], "≥ 100×", verdict(derived["keygate_over_litellm"], 100, True), "×"),
    ("RSS idle (after start + a little traffic)", idle_mb, "≤ 20 MiB", verdict(idle_mb, 20), "MiB"),
    (f"RSS per idle open stream ({get(mem, 'hold', 'open') or 0:,} held)", derived["per_stream_kb"], "≤ 64 KiB", verdict(derived["per_stream_kb"], 64), "KiB"),
    ("Unseal (vault::open) mean", unseal_us, "≤ 5 µs", verdict(unseal_us, 5), "µs"),
    ("Issue 12: added p50, c=1, keygate ÷ nginx", derived["over_nginx_added_p50"], "≤ 1.5×", verdict(derived["over_nginx_added_p50"], 1.5), "×"),
    ("Issue 12: total p99, c=1, keygate ÷ nginx", derived["over_nginx_total_p99"], "≤ 1.3×", verdict(derived["over_nginx_total_p99"], 1.3), "×"),
    ("Issue 12: throughput c=64, keygate ÷ nginx", derived["over_nginx_rps"], "≥ 0.8×", verdict(derived["over_nginx_rps"], 0.8, True), "×"),
    ("Issue 12: added SSE TTFB p99, c=1, keygate ÷ nginx", derived["over_nginx_ttfb_added_p99"], "≤ 1.5×", verdict(derived["over_nginx_ttfb_added_p99"], 1.5), "×"),
    (
        "Issue 12: open streams held without error",
        get(mem, "hold", "open"),
        "10,000, none failed",
        "not measured" if get(mem, "hold", "open") is None
        else ("met" if get(mem, "hold", "open") >= 10000 and not get(mem, "hold", "failures_sample") else "NOT met"),
        "streams",
    ),
]
res["targets"] = [
    {"what": w, "value": v, "unit": u, "target": t, "result": r} for (w, v, t, r, u) in targets
]

with open(out_path, "w") as f:
    json.dump(res, f, indent=2, sort_keys=False)


def fmt(v, unit="", digits=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        v = round(v, digits)
        if digits == 0:
            v = int(v)
        return f"{v:,}{unit}"
    return f"{v:,}{unit}"


def disturbance(d):
    """Cores used by processes other than the measured ones (the alternating baseline
    shares its run with the proxied path, so it has no figure of its own)."""
    if not d or d.get("foreign_cores") is None:
        return "(same run)" if d else "—"
    per = d.get("foreign_cores_per_attempt") or [d["foreign_cores"]]
    return f"{d['foreign_cores']:.2f} ({len(per)}: " + ", ".join(f"{x:.2f}" for x in per) + ")"


print("\n## Targets\n")
print("| What | Measured | Target | Result |")
print("| --- | --- | --- | --- |")
for w, v, t, r, u in targets:
    digits = 2 if (u in ("µs",) and w.startswith("Unseal")) or (u == "×" and "nginx" in w) else (0 if u in ("×", "streams") else 1)
    print(f"| {w} | {fmt(v, ' ' + u, digits)} | {t} | {r} |")

print(f"\n## Latency at concurrency 1 (µs; sequential requests, alternating direct/proxied, in {get(lat, 'keygate', 'rounds') or 1} rounds on new keep-alive connections)\n")
print("| Path | n | p50 | p90 | p99 | p99.9 | added p50 | added p99 | errors | other processes, cores (attempts) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, label, base in (
    ("direct", "direct → upstream (alternating with keygate)", None),
    ("keygate", "via keygate", "direct"),
    ("direct_alongside_limited", "direct → upstream (alternating with keygate, grant with limits)", None),
    ("keygate_limited", "via keygate, grant with limits", "direct_alongside_limited"),
    ("direct_alongside_litellm", "direct → upstream (alternating with LiteLLM)", None),
    ("litellm", "via LiteLLM", "direct_alongside_litellm"),
    ("direct_alongside_nginx", "direct → upstream (alternating with nginx)", None),
    ("nginx", "via nginx", "direct_alongside_nginx"),
):
    d = lat.get(name)
    s = get(d, "total_us")
    if not s:
        print(f"| {label} | — | — | — | — | — | — | — | — | — |")
        continue
    ap50 = sub(s["p50"], get(lat, base, "total_us", "p50")) if base else None
    ap99 = sub(s["p99"], get(lat, base, "total_us", "p99")) if base else None
    print(f"| {label} | {s['n']:,} | {fmt(s['p50'])} | {fmt(s['p90'])} | {fmt(s['p99'])} | {fmt(s['p999'])} | {fmt(ap50)} | {fmt(ap99)} | {d['errors']} | {disturbance(d)} |")

print("\n## Streaming time to first SSE body byte, concurrency 1 (µs)\n")
print("| Path | n | p50 | p90 | p99 | p99.9 | whole stream p50 | added p50 | added p99 | other processes, cores (attempts) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, label, base in (
    ("direct", "direct → upstream (alternating with keygate)", None),
    ("keygate", "via keygate", "direct"),
    ("direct_alongside_nginx", "direct → upstream (alternating with nginx)", None),
    ("nginx", "via nginx", "direct_alongside_nginx"),
):
    d = ttfb.get(name)
    s = get(d, "ttfb_us")
    if not s:
        print(f"| {label} | — | — | — | — | — | — | — | — | — |")
        continue
    ap50 = sub(s["p50"], get(ttfb, base, "ttfb_us", "p50")) if base else None
    ap99 = sub(s["p99"], get(ttfb, base, "ttfb_us", "p99")) if base else None
    print(f"| {label} | {s['n']:,} | {fmt(s['p50'])} | {fmt(s['p90'])} | {fmt(s['p99'])} | {fmt(s['p999'])} | {fmt(get(d, 'total_us', 'p50'))} | {fmt(ap50)} | {fmt(ap99)} | {disturbance(d)} |")

print(f"\n## Throughput, {get(res, 'machine', 'concurrency')} connections, closed loop ({get(res, 'machine', 'secs')} s after {get(res, 'machine', 'warmup_secs')} s warmup)\n")
print("| Path | req/s (keygate-bench) | req/s (wrk) | p50 ms | p99 ms | errors | proxy CPU (cores) | proxy CPU µs/req | upstream cores | load gen cores | machine busy | other processes, cores (attempts) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
nproc = get(res, "machine", "nproc")
for name, label, proxy in (
    ("direct", "direct → upstream", None),
    ("keygate", "via keygate", "keygate"),
    ("keygate_limited", "via keygate, grant with limits", "keygate"),
    ("litellm", "via LiteLLM (1 worker)", "litellm"),
    ("litellm_nproc_workers", f"via LiteLLM ({nproc} workers)", "litellm"),
    ("nginx", f"via nginx ({get(res, 'machine', 'keygate_workers')} workers)", "nginx"),
):
    d = tp.get(name)
    w = get(res, "wrk", name)
    if not d:
        print(f"| {label} | — | {fmt(get(w, 'rps'), '', 0)} | — | — | — | — | — | — | — | — | — |")
        continue
    l = d.get("latency_us") or {}
    pc = get(d, "cpu", proxy) if proxy else None
    print(
        f"| {label} | {fmt(d['rps'], '', 0)} | {fmt(get(w, 'rps'), '', 0)} | {fmt((l.get('p50') or 0) / 1000, '', 2)} | {fmt((l.get('p99') or 0) / 1000, '', 2)} "
        f"| {d['errors']} | {fmt(get(pc, 'cores'), '', 2)} | {fmt(get(pc, 'us_per_req'), '', 1)} | {fmt(get(d, 'cpu', 'upstream', 'cores'), '', 2)} "
        f"| {fmt(get(d, 'cpu', 'loadgen', 'cores'), '', 2)} | {fmt(d['machine_busy'] * 100, '%', 0)} | {disturbance(d)} |"
    )
print(
    f"\nkeygate ÷ LiteLLM (1 worker): {fmt(derived['keygate_over_litellm'], '×', 0)} (keygate-bench), {fmt(derived['wrk_keygate_over_litellm'], '×', 0)} (wrk); "
    f"keygate ÷ LiteLLM ({nproc} workers): {fmt(derived['keygate_over_litellm_nproc_workers'], '×', 0)}; keygate ÷ direct: {fmt(derived['keygate_over_direct'], '', 2)}"
)

print(f"\n## Against nginx (issue 12; nginx {res['nginx_version'] or '—'}, {get(res, 'machine', 'keygate_workers')} workers each, same run, same upstream)\n")
if res["nginx_skipped"]:
    print(f"nginx: {res['nginx_skipped']}\n")
print("| Figure | keygate | nginx | keygate ÷ nginx | Target | Result |")
print("| --- | --- | --- | --- | --- | --- |")


def r2(v):
    return fmt(v, "×", 2)


for label, k, n, rt, target, res_ in (
    ("added p50, c=1 (µs)", derived["added_p50_us"], derived["nginx_added_p50_us"], derived["over_nginx_added_p50"], "≤ 1.5×", verdict(derived["over_nginx_added_p50"], 1.5)),
    ("added p99, c=1 (µs)", derived["added_p99_us"], derived["nginx_added_p99_us"], derived["over_nginx_added_p99"], "—", ""),
    ("total p50, c=1 (µs)", get(lat, "keygate", "total_us", "p50"), get(lat, "nginx", "total_us", "p50"), derived["over_nginx_total_p50"], "—", ""),
    ("total p99, c=1 (µs)", get(lat, "keygate", "total_us", "p99"), get(lat, "nginx", "total_us", "p99"), derived["over_nginx_total_p99"], "≤ 1.3×", verdict(derived["over_nginx_total_p99"], 1.3)),
    ("throughput c=64, keygate-bench (req/s)", kg_rps, ng_rps, derived["over_nginx_rps"], "≥ 0.8×", verdict(derived["over_nginx_rps"], 0.8, True)),
    ("throughput c=64, wrk (req/s)", get(res, "wrk", "keygate", "rps"), get(res, "wrk", "nginx", "rps"), derived["over_nginx_rps_wrk"], "(cross-check)", ""),
    ("SSE TTFB added p50, c=1 (µs)", derived["ttfb_added_p50_us"], derived["nginx_ttfb_added_p50_us"], derived["over_nginx_ttfb_added_p50"], "—", ""),
    ("SSE TTFB added p99, c=1 (µs)", derived["ttfb_added_p99_us"], derived["nginx_ttfb_added_p99_us"], derived["over_nginx_ttfb_added_p99"], "≤ 1.5×", verdict(derived["over_nginx_ttfb_added_p99"], 1.5)),
    ("proxy CPU per request, c=64 (µs)", kg_cpu, ng_cpu, derived["over_nginx_cpu_per_req"], "printed", ""),
    ("→ req/s per core (1e6 ÷ CPU µs/req)", derived["keygate_rps_per_core_est"], derived["nginx_rps_per_core_est"], None, "", ""),
):
    print(f"| {label} | {fmt(k, '', 1)} | {fmt(n, '', 1)} | {r2(rt)} | {target} | {res_} |")

if res["workers"]:
    print(f"\n## Scaling with workers (keygate and nginx restarted with each count; c=1: {get(res, 'machine', 'workers_n')} requests per path; c={get(res, 'machine', 'concurrency')}: {get(res, 'machine', 'secs')} s)\n")
    print("| Workers | Proxy | added p50 µs | added p99 µs | total p99 µs | req/s c=64 | proxy cores | CPU µs/req | req/s per core (est.) | ÷ nginx req/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for w, d in res["workers"].items():
        ng_w = get(d, "tput_nginx", "rps")
        for proxy in ("keygate", "nginx"):
            L = d.get(f"latency_{proxy}")
            T = d.get(f"tput_{proxy}")
            cu = get(T, "cpu", proxy, "us_per_req")
            print(
                f"| {w} | {proxy} | {fmt(sub(get(L, 'total_us', 'p50'), get(L, 'baseline', 'total_us', 'p50')))} "
                f"| {fmt(sub(get(L, 'total_us', 'p99'), get(L, 'baseline', 'total_us', 'p99')))} | {fmt(get(L, 'total_us', 'p99'))} "
                f"| {fmt(get(T, 'rps'), '', 0)} | {fmt(get(T, 'cpu', proxy, 'cores'), '', 2)} | {fmt(cu, '', 1)} | {fmt(per_core(cu), '', 0)} "
                f"| {r2(ratio(get(T, 'rps'), ng_w)) if proxy == 'keygate' else ''} |"
            )
    print(
        "\nreq/s per core (est.) = 1e6 ÷ the proxy's CPU µs per request at c=64: what one more core "
        "would add if the load generator and upstream were elsewhere (here they share the cores)."
    )

h = mem.get("hold") or {}
print("\n## Memory (keygate, KiB from /proc/PID/status)\n")
print("| When | VmRSS | RssAnon | RssFile | open fds |")
print("| --- | --- | --- | --- | --- |")


def memrow(label, m, fds=None):
    m = m or {}
    print(f"| {label} | {fmt(m.get('VmRSS'))} | {fmt(m.get('RssAnon'))} | {fmt(m.get('RssFile'))} | {fmt(fds)} |")


memrow("right after start", mem.get("start"))
memrow("idle after start + 250 requests", mem.get("idle"), h.get("fds_before"))
memrow(f"with {h.get('open', '—')} idle streams open (upstream holding {get(h, 'upstream_with', 'hold_open')})", h.get("mem_with"), h.get("fds_with"))
memrow(f"{get(h, 'release_wait_s')} s + 2 s after the clients closed them (upstream still holding {get(h, 'upstream_after_close', 'hold_open')})", {"VmRSS": h.get("rss_after_close_kb")}, h.get("fds_after_close"))
memrow("after the throughput runs", mem.get("after_load"))
if mem.get("litellm"):
    memrow("(LiteLLM, 1 worker, after its runs)", mem.get("litellm"))
print(f"\nper open stream: {fmt(derived['per_stream_kb'], ' KiB', 1)} ((RSS with − RSS idle) ÷ {h.get('open')})")
rel = h.get("upstream_released_after_s")
print(
    f"upstream requests cancelled after the clients left: "
    + (f"within {rel:.2f} s" if rel is not None else f"NO — still open {get(h, 'release_wait_s')} s after the clients closed")
)

STORE_ROWS = (
    ("sled", "1 node, sled"),
    ("pg", "1 node, PostgreSQL"),
    ("lb1", "nginx → 1 node, PostgreSQL"),
    ("lb3", "nginx → 3 nodes, one PostgreSQL"),
)


def cpu_of(d, prefix):
    """Summed cores and µs/request of the watched processes whose name starts with prefix."""
    cpu = get(d, "cpu") or {}
    xs = [v for k, v in cpu.items() if k.startswith(prefix)]
    if not xs:
        return None, None
    cores = sum(v.get("cores") or 0 for v in xs)
    us = [v.get("us_per_req") for v in xs]
    return cores, (sum(us) if all(u is not None for u in us) else None)


stores = res["stores"]
st_derived = {}
for name, _ in STORE_ROWS:
    L = get(stores, name, "latency")
    T = get(stores, name, "throughput")
    parts = {p: cpu_of(T, p) for p in ("keygate", "postgres", "nginx", "upstream", "loadgen")}
    served = [parts[p][1] for p in ("keygate", "postgres", "nginx") if parts[p][1] is not None]
    st_derived[name] = {
        "added_p50_us": sub(get(L, "total_us", "p50"), get(L, "baseline", "total_us", "p50")),
        "added_p99_us": sub(get(L, "total_us", "p99"), get(L, "baseline", "total_us", "p99")),
        "rps": get(T, "rps"),
        "cpu_us_per_req": {p: parts[p][1] for p in parts},
        "cores": {p: parts[p][0] for p in parts},
        # What serving one request costs in total, wherever it runs: keygate node(s) +
        # PostgreSQL + nginx (the load generator and the upstream are left out).
        "serving_cpu_us_per_req": sum(served) if served else None,
    }
st_derived["pg_over_sled_rps"] = ratio(get(st_derived, "pg", "rps"), get(st_derived, "sled", "rps"))
st_derived["lb3_over_lb1_rps"] = ratio(get(st_derived, "lb3", "rps"), get(st_derived, "lb1", "rps"))
res["stores_derived"] = st_derived
with open(out_path, "w") as f:
    json.dump(res, f, indent=2, sort_keys=False)

if any(get(stores, n, "throughput") for n, _ in STORE_ROWS):
    m = res["machine"] or {}
    print(
        f"\n## Issue 14: PostgreSQL and several nodes ({m.get('nproc')} cores shared by the load generator, "
        f"the upstream, nginx, every keygate node and PostgreSQL; {m.get('node_workers')} workers per node)\n"
    )
    print(f"PostgreSQL: {(res['pg_version'] or '—').split(' on ')[0]}; settings: {', '.join((res['pg_settings'] or '').splitlines()) or '—'}\n")
    print(f"c=1: {m.get('stores_n')} sequential requests per path alternating with direct ones; c={m.get('concurrency')}: {m.get('secs')} s after {m.get('warmup_secs')} s warmup.\n")
    print("| Setup | added p50 µs, c=1 | added p99 µs, c=1 | total p99 µs, c=1 | req/s, c=64 | p99 ms, c=64 | errors | keygate cores (µs/req) | PostgreSQL cores (µs/req) | nginx cores (µs/req) | serving CPU µs/req | upstream + load gen cores | machine busy | other processes, cores |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, label in STORE_ROWS:
        L = get(stores, name, "latency")
        T = get(stores, name, "throughput")
        d = st_derived[name]
        if not T and not L:
            print(f"| {label} | — | — | — | — | — | — | — | — | — | — | — | — | — |")
            continue

        def cu(p):
            c, u = d["cores"][p], d["cpu_us_per_req"][p]
            return "—" if c is None else f"{c:.2f} ({fmt(u, '', 1)})"

        ul = (d["cores"]["upstream"] or 0) + (d["cores"]["loadgen"] or 0)
        errors = f"{get(L, 'errors') or 0} / {get(T, 'errors') or 0}"
        print(
            f"| {label} | {fmt(d['added_p50_us'])} | {fmt(d['added_p99_us'])} | {fmt(get(L, 'total_us', 'p99'))} "
            f"| {fmt(d['rps'], '', 0)} | {fmt((get(T, 'latency_us', 'p99') or 0) / 1000, '', 2)} | {errors} "
            f"| {cu('keygate')} | {cu('postgres')} | {cu('nginx')} | {fmt(d['serving_cpu_us_per_req'], '', 1)} "
            f"| {ul:.2f} | {fmt((get(T, 'machine_busy') or 0) * 100, '%', 0)} | {disturbance(L)} / {disturbance(T)} |"
        )
    print(
        f"\nPostgreSQL ÷ sled req/s: {fmt(st_derived['pg_over_sled_rps'], '×', 2)}; "
        f"3 nodes ÷ 1 node behind nginx: {fmt(st_derived['lb3_over_lb1_rps'], '×', 2)}. "
        "keygate cores sum every node; errors are c=1 / c=64; serving CPU = keygate + PostgreSQL + nginx per request."
    )

u = res["unseal"]
print("\n## Vault JWE (criterion, keygate-core)\n")
for k in ("unseal", "seal"):
    c = u.get(k)
    if c:
        print(f"- {k}: mean {c['mean_ns'] / 1000:.2f} µs (95% CI {c['mean_ci_ns'][0] / 1000:.2f}–{c['mean_ci_ns'][1] / 1000:.2f} µs)")
    else:
        print(f"- {k}: not measured")

for q in res["quiet_checks"]:
    print(f"\nquiet check: {q}", end="")
print()
if res["litellm_skipped"]:
    print(f"\nLiteLLM: {res['litellm_skipped']}")
elif res["litellm_version"]:
    print(f"\nLiteLLM version {res['litellm_version']}")
m = res["machine"] or {}
print(f"\nMachine: {m.get('nproc')} cores, {m.get('cpu_model')}, kernel {m.get('kernel')}, load average {m.get('loadavg_at_start')} at start, {res['loadavg_before_measuring']} before measuring; keygate built from {m.get('keygate_source')}")
