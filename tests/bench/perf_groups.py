#!/usr/bin/env python3
"""Groups the samples of `perf script -F comm,tid,ip,sym` (with call chains) by what
they do, for tests/bench/profile.sh. Reads stdin, prints two tables: where the samples
end (leaf frame: the CPU spent *in* that code) and which parts of keygate or the
kernel they pass through (inclusive: a sample counts for every group on its stack)."""

import argparse
import re
import sys
from collections import Counter

ap = argparse.ArgumentParser()
ap.add_argument("--title", default="profile")
args = ap.parse_args()

samples = []  # list of (ip, symbol) frames, leaf first
cur = None
for line in sys.stdin:
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = None
        continue
    if not line.startswith((" ", "\t")):
        if cur:
            samples.append(cur)
        cur = []
        continue
    parts = line.strip().split(None, 1)
    if cur is not None:
        cur.append((parts[0], parts[1] if len(parts) > 1 else "[unknown]"))
if cur:
    samples.append(cur)
total = len(samples)
if not total:
    print(f"{args.title}: no samples")
    sys.exit(0)

SYSCALL = re.compile(r"^__(?:x64|se|do)_sys_(\w+)|^(?:__sys|ksys)_(\w+)")


def is_kernel(ip):
    # ffffffffffffffff is where perf's DWARF unwinder marks the end of a user stack
    return ip.startswith("ffff") and ip != "ffffffffffffffff"


def syscall_of(frames):
    """The outermost syscall on the stack (frames leaf first)."""
    name = None
    for ip, f in frames:
        if not is_kernel(ip):
            continue
        m = SYSCALL.search(f)
        if m:
            name = m.group(1) or m.group(2)
    return name


def crate_of(sym):
    s = sym.lstrip("<&*")
    s = re.sub(r"^(?:mut |dyn |impl )", "", s)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", s)
    return m.group(1) if m else None


ALLOC = re.compile(r"^(?:malloc|free|cfree|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|tcache_|__libc_malloc|__libc_free|__libc_calloc|__libc_realloc|unlink_chunk|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_|alloc::alloc::|sysmalloc|mi_|je_)")
MEM = re.compile(r"^(?:__)?(?:memcpy|memmove|memset|memcmp|bcmp|strlen|__memcpy|__memmove|__memset|__memcmp|__strlen)")

leaf = Counter()
for fr in samples:
    ip, s = fr[0] if fr else ("0", "[unknown]")
    if is_kernel(ip):
        sc = syscall_of(fr)
        if sc:
            leaf[f"kernel: {sc}"] += 1
        elif any(f.startswith(("do_syscall_64", "entry_SYSCALL", "syscall_exit")) for _, f in fr):
            leaf["kernel: syscall entry/exit"] += 1
        elif any("irq" in f for _, f in fr):
            leaf["kernel: interrupts"] += 1
        else:
            leaf["kernel: other (scheduler, page faults)"] += 1
    elif ALLOC.match(s):
        leaf["allocator (malloc/free)"] += 1
    elif MEM.match(s):
        leaf["memcpy/memset/memcmp"] += 1
    else:
        c = crate_of(s)
        leaf[f"crate {c}" if c else f"other: {s[:60]}"] += 1

INCL = [
    ("kernel (any kernel frame)", None),
    ("  in a syscall", "sys:"),
    ("  syscall entry/exit (any syscall)", r"^(?:do_syscall_64|entry_SYSCALL)"),
    ("  send: sendto/write/writev/sendmsg", "sys:sendto|write|writev|sendmsg"),
    ("  receive: recvfrom/read/readv/recvmsg", "sys:recvfrom|read|readv|recvmsg"),
    ("  epoll_wait", "sys:epoll_wait|epoll_pwait"),
    ("  futex (cross-thread wake-ups)", "sys:futex"),
    ("  epoll_ctl", "sys:epoll_ctl"),
    ("  connect/accept/close/socket", "sys:connect|accept|accept4|close|socket|shutdown"),
    ("allocator (malloc/free/realloc)", ALLOC.pattern),
    ("tokio runtime", r"^<?tokio::"),
    ("actix-http (server HTTP/1)", r"actix_http::"),
    ("actix-web (routing, extractors, middleware)", r"actix_web::"),
    ("actix-server / actix-rt", r"actix_server::|actix_rt::"),
    ("reqwest (upstream client)", r"reqwest::"),
    ("hyper (upstream HTTP/1 client)", r"hyper::|hyper_util::"),
    ("keygate_server::proxy (the proxy handler)", r"keygate_server::proxy"),
    ("  proxy::body (request body read)", r"keygate_server::proxy::body"),
    ("  proxy::forward (upstream request/response)", r"keygate_server::proxy::forward"),
    ("  proxy::verdict", r"keygate_server::proxy::verdict"),
    ("keygate_server::auth (authentication)", r"keygate_server::auth"),
    ("keygate_store (sled lookups/writes)", r"keygate_store::|sled::"),
    ("keygate_core::vault (unseal) + crypto", r"keygate_core::vault|aes_gcm|aes::|chacha|sha2::|hmac::|blake|ring::|aws_lc"),
    ("limiter / policy / limits", r"keygate_server::limiter|keygate_core::(?:policy|limits)|keygate_server::throttle"),
    ("accounting / usage", r"keygate_server::accounting|keygate_core::usage|keygate_store::usage"),
    ("metrics (prometheus; the middleware wraps every request, so it is not matched)", r"prometheus::"),
    ("tracing spans and events (not the Instrumented wrapper)", r"tracing::span|tracing_core::|tracing_subscriber::|keygate_server::telemetry"),
    ("request id generation", r"RequestId::new"),
    ("serde_json", r"serde_json::"),
    ("http header maps (http::header)", r"http::header::"),
    ("tokenizer (tiktoken / tokens)", r"tiktoken|keygate_core::tokens"),
]
incl = Counter()
compiled = [(n, re.compile(p) if p and not p.startswith("sys:") else p) for n, p in INCL]
for fr in samples:
    sc = syscall_of(fr)
    for name, rx in compiled:
        if rx is None:
            hit = any(is_kernel(ip) for ip, _ in fr)
        elif isinstance(rx, str):
            names = rx[4:].split("|") if rx != "sys:" else None
            hit = sc is not None and (names is None or sc in names)
        else:
            hit = any(rx.search(f) for _, f in fr)
        if hit:
            incl[name] += 1

print(f"## {args.title}: {total} samples\n")
print("Where the CPU is spent (leaf frame):\n")
print("| group | % |")
print("| --- | --- |")
for k, v in leaf.most_common(25):
    print(f"| {k} | {100 * v / total:.1f} |")
print("\nWhat the samples pass through (inclusive; groups overlap):\n")
print("| group | % |")
print("| --- | --- |")
for name, _ in INCL:
    print(f"| {name} | {100 * incl[name] / total:.1f} |")


# The parts of a proxied request, as in the profile table of docs/BENCHMARKS.md
# (issue 12): inclusive shares, matched on any frame of the stack.
PARTS = [
("authenticate::identify (grant key → grant: hash + sled read + decode)", r"proxy::authenticate::identify"),
("unseal path (services::vault::open_record: sled read + decode + vault::open)", r"services::vault::open_record|proxy::unseal::unseal"),
("  keygate_core::vault::open (JWE decrypt only)", r"keygate_core::vault::open"),
("keygate_store::store::Store::grant / ::vault (sled + record decode)", r"keygate_store::store::Store::(?:grant|vault)"),
("  sled (inclusive)", r"^sled::|<sled::"),
("  store records decode (keygate_store::records)", r"keygate_store::records"),
("upstream_headers / downstream_headers", r"proxy::headers::(?:upstream|downstream)_headers"),
("accounting (Account::end, usage::from_json_tail)", r"proxy::account::|keygate_core::usage::"),
("limiter", r"keygate_server::limiter"),
("response relay (proxy::stream: Meter, respond, UpstreamBody)", r"proxy::stream::"),
("prometheus (metrics)", r"prometheus::"),
("tracing spans/events", r"^tracing::span|^tracing_core::|tracing::span::|<tracing::span|tracing_subscriber"),
("request id generation", r"RequestId::new"),
("reqwest: building/sending the request (Client::execute, url)", r"reqwest::async_impl::client::Client::execute|reqwest::async_impl::request::RequestBuilder|url::parser"),
("hyper client connection task (h1 dispatch, parse/encode)", r"hyper::proto::h1::dispatch"),
("actix-http h1 (decode request / encode response)", r"actix_http::h1::(?:codec|decoder|encoder)|actix_http::h1::dispatcher::InnerDispatcher<T,S,B,X,U>::poll_(?:request|flush|read)"),
("serde_json (any)", r"serde_json::"),
("allocator (malloc/free/realloc)", r"^(?:malloc|free|cfree|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|unlink_chunk|__libc_malloc|__libc_free|__GI___libc_malloc|__GI___libc_free|__rust_alloc|__rust_dealloc|__rust_realloc)"),
("memcpy/memmove", r"__mem(?:move|cpy)"),
("kernel: context switch / wake-up (finish_task_switch, schedule, try_to_wake_up)", r"^(?:finish_task_switch|__schedule|schedule|try_to_wake_up)"),
("kernel: tcp send (incl. loopback delivery to the peer)", r"^tcp_sendmsg"),
("kernel: tcp receive (recvmsg)", r"^tcp_recvmsg"),
("kernel: epoll_wait", r"^do_epoll_wait"),
("clock_gettime", r"clock_gettime"),
]
parts = Counter()
compiled_parts = [(n, re.compile(p)) for n, p in PARTS]
for fr in samples:
    for name, rx in compiled_parts:
        if any(rx.search(f) for _, f in fr):
            parts[name] += 1
print("\nParts of a proxied request (inclusive; rows overlap):\n")
print("| part | % |")
print("| --- | --- |")
for name, _ in PARTS:
    print(f"| {name} | {100 * parts[name] / total:.1f} |")
