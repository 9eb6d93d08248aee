#!/usr/bin/env python3
"""Scale-out bench: N login sessions on a 6-node Redis Cluster (3 primaries, 3 replicas), and
what durable writes cost per login on a primary with one replica. Loopback only; every
server has a maxmemory bound and every wait a time limit.

Needs: redis-server, redis-cli, and `cargo build --release -p bench-scale-out` in bench/.
Usage: bench/scale_out.py [--sessions N] [--logins N]
Prints a Markdown report (paste into docs/benchmarks.md).
"""

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "target", "release", "bench-scale-out")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


def info(port, section, field):
    for line in cli(port, "INFO", section).splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None


def start(port, extra):
    d = tempfile.mkdtemp(prefix="bench-scale-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", d, "--maxmemory", "2gb",
         "--maxmemory-policy", "volatile-lru", "--repl-diskless-sync-delay", "0", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 20
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, d
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server did not start on {port}")


def run(*args, limit=1800):
    out = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=limit,
                         check=True)
    return dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)


def cluster_run(sessions):
    ports = [free_port() for _ in range(6)]
    # The bus port defaults to port + 10000, which overflows for high free ports.
    procs = [start(p, ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                       "--cluster-port", str(free_port()),
                       "--cluster-config-file", f"nodes-{p}.conf"]) for p in ports]
    try:
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "1",
                        "--cluster-yes"], capture_output=True, timeout=60, check=True)
        end = time.time() + 30
        while time.time() < end and not all(
                info(p, "cluster", "cluster_state") == "ok" for p in ports):
            time.sleep(0.2)
        primaries = [p for p in ports if info(p, "replication", "role") == "master"]
        before = {p: int(info(p, "memory", "used_memory")) for p in primaries}
        result = run("fill", f"redis://127.0.0.1:{ports[0]}", sessions)
        rows = []
        for p in primaries:
            used = int(info(p, "memory", "used_memory")) - before[p]
            keys = int(cli(p, "DBSIZE"))
            rows.append((p, keys, used))
        return result, rows
    finally:
        for proc, d in procs:
            proc.kill()
            proc.wait(timeout=10)
            shutil.rmtree(d, ignore_errors=True)


def durable_run(logins):
    primary, replica = free_port(), free_port()
    procs = [start(primary, []), start(replica, ["--replicaof", "127.0.0.1", str(primary)])]
    try:
        end = time.time() + 30
        while time.time() < end and info(replica, "replication", "master_link_status") != "up":
            time.sleep(0.1)
        url = f"redis://127.0.0.1:{primary}"
        return run("logins", url, logins), run("logins", url, logins, 1000)
    finally:
        for proc, d in procs:
            proc.kill()
            proc.wait(timeout=10)
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--logins", type=int, default=5_000)
    opts = ap.parse_args()
    result, rows = cluster_run(opts.sessions)
    plain, durable = durable_run(opts.logins)
    print(f"Command: `bench/scale_out.py --sessions {opts.sessions} --logins {opts.logins}`\n")
    print("| figure | value |\n| --- | --- |")
    for k in ["filled", "fill seconds", "creates per second", "stats sessions", "stats ms",
              "listed sessions of one user", "list ms", "revoked", "revoke ms",
              "first read pass", "first read pass µs per read",
              "first read pass Redis reads (cache misses)",
              "second read pass µs per read", "second read pass Redis reads (cache misses)"]:
        print(f"| {k} | {result.get(k)} |")
    print("\n| primary | keys | used_memory growth | bytes per key |\n| --- | --- | --- | --- |")
    for i, (_, keys, used) in enumerate(rows):
        print(f"| primary {i + 1} | {keys:,} | {used:,} | {used / max(keys, 1):.0f} |")
    total = sum(used for _, _, used in rows)
    print(f"| all primaries | {sum(k for _, k, _ in rows):,} | {total:,} | "
          f"{total / opts.sessions:.0f} per session |")
    print("\n| login (create with a user) | p50 µs | p99 µs |\n| --- | --- | --- |")
    print(f"| plain | {plain['p50 us']} | {plain['p99 us']} |")
    print(f"| durable (`WAIT 1 1000`, one replica) | {durable['p50 us']} | {durable['p99 us']} |")


if __name__ == "__main__":
    main()
