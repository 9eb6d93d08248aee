#!/usr/bin/env python3
"""Latency at cloud distance: p50 and p99 of a read and a write, at a fixed moderate request
rate (open loop, so queueing shows instead of slowing the load), with network distance
between each app and Redis.

This kernel has no `netem`, so the distance is a userspace proxy (latency/delay-proxy) that
holds every byte for DELAY µs in each direction between the app and a loopback redis-server.
Everything stays on loopback and every loop is bounded in count and time.

Needs: redis-server and `cargo build --release` in bench/ (this script runs it).
Usage: bench/latency.py [--delay-us 250] [--rate 500] [--seconds 10]
Prints a Markdown report (paste into docs/benchmarks.md).
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import HERE, Redis, free_port, login, wait_port  # noqa: E402

SERVERS = {
    # The floor of this harness: the same routes with no sessions (and no Redis).
    "axum, no sessions": ("baseline", {}),
    "cloakroom (strict)": ("cloakroom", {"READ_CACHE": "0"}),
    "cloakroom (cached, the default)": ("cloakroom", {}),
    "tower-sessions": ("tower-sessions", {}),
    "actix-session": ("actix-session", {}),
}
ROUTES = [("read", "GET", "/api/profile"), ("write", "POST", "/api/visits")]


def binary(name):
    return os.path.join(HERE, "target/release", name)


def open_loop(port, method, path, cookie, rate, seconds):
    out = subprocess.run([binary("open-loop"), str(port), method, path, cookie or "-", str(rate),
                          str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
    done, errors, p50, p90, p99, top = map(int, out.stdout.split())
    return dict(done=done, errors=errors, p50=p50, p90=p90, p99=p99, max=top)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-us", type=int, default=250)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=10)
    opts = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=HERE, check=True)
    redis = Redis()
    proxy_port = free_port()
    proxy = subprocess.Popen([binary("delay-proxy"), str(proxy_port), str(redis.port),
                              str(opts.delay_us)])
    wait_port(proxy_port)
    rows = {}
    try:
        for label, (name, extra) in SERVERS.items():
            port = free_port()
            env = dict(os.environ, PORT=str(port), RUST_LOG="error",
                       REDIS_URL=f"redis://127.0.0.1:{proxy_port}/0", **extra)
            server = subprocess.Popen([binary(f"bench-{name}")], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(port)
                cookie = login(port, need_cookie=name != "baseline")
                open_loop(port, "GET", "/api/profile", cookie, opts.rate, 2)  # warm-up
                rows[label] = {r: open_loop(port, m, p, cookie, opts.rate, opts.seconds)
                               for r, m, p in ROUTES}
                print(label, rows[label], file=sys.stderr)
            finally:
                server.kill()
                server.wait(timeout=10)
    finally:
        proxy.kill()
        redis.stop()
    print(f"Command: `bench/latency.py --delay-us {opts.delay_us} --rate {opts.rate} "
          f"--seconds {opts.seconds}` ({time.strftime('%Y-%m-%d')}): {opts.delay_us} µs each way "
          f"between app and Redis, {opts.rate} requests/s open loop\n")
    print("| server | read p50 µs | read p99 µs | write p50 µs | write p99 µs | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, r in rows.items():
        errors = r["read"]["errors"] + r["write"]["errors"]
        print(f"| {label} | {r['read']['p50']:,} | {r['read']['p99']:,} | {r['write']['p50']:,} "
              f"| {r['write']['p99']:,} | {errors} |")


if __name__ == "__main__":
    main()
