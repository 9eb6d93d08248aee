#!/usr/bin/env python3
"""Load harness: the same routes served by Cloakroom, its peers and a no-session baseline, one
after another against one loopback redis-server. Everything is bounded in count and time.

Needs: redis-server, wrk, node and npm (express-session), and `cargo build --release` in
bench/ (this script runs it, and `npm install` for express-session).
Usage: bench/run.py [--runs N] [--seconds N] [--connections N] [--only NAME[,NAME]]
Prints a Markdown report (paste into docs/benchmarks.md).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = ["cloakroom", "cloakroom-strict", "tower-sessions", "actix-session", "express-session",
           "baseline", "actix-baseline", "express-baseline", "cloakroom-memory",
           "cloakroom-fallback"]
# Each session library's own framework with no sessions: its session cost per request is its
# app CPU above that baseline's, plus what Redis spends.
FRAMEWORK = {"cloakroom": "baseline", "cloakroom-strict": "baseline",
             "cloakroom-memory": "baseline", "cloakroom-fallback": "baseline",
             "tower-sessions": "baseline", "actix-session": "actix-baseline",
             "express-session": "express-baseline"}
BASELINES = {"baseline", "actix-baseline", "express-baseline"}
EXPRESS = os.path.join(HERE, "servers", "express-session")
# name -> (binary, extra environment). cloakroom-memory is the same server on the in-process
# store: the layer's own cost, without Redis.
BINARIES = {"cloakroom-memory": ("cloakroom", {"STORE": "memory"}),
            # Every read asks Redis (the read cache off).
            "cloakroom-strict": ("cloakroom", {"READ_CACHE": "0"}),
            # The fallback failure policy: a ticket cookie beside the session cookie.
            "cloakroom-fallback": ("cloakroom", {"FALLBACK": "1"}),
            "express-baseline": ("express-session", {"NO_SESSIONS": "1"})}
# Commands the Cloakroom scripts run inside one EVALSHA (counted by INFO commandstats too).
INSIDE_SCRIPTS = {"hgetall", "hmget", "hget", "hset", "hdel", "hincrby", "hkeys", "pexpire",
                  "del", "exists", "zremrangebyscore", "zadd", "zrem", "zcard", "pttl",
                  "publish"}
# What is measured: a read, a write, and a route that never uses the session (with a cookie).
ROUTES = [("read", "GET", "/api/profile"), ("write", "POST", "/api/visits"),
          ("untouched", "GET", "/api/untouched")]
LABELS = [label for label, _, _ in ROUTES]
HARNESS = {"info", "config", "flushall", "dbsize", "ping", "client", "hello", "select",
           "auth", "shutdown", "memory"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=20.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {limit}s")


class Redis:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def cmd(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = f"*{len(args)}\r\n" + "".join(f"${len(str(a))}\r\n{a}\r\n" for a in args)
            s.sendall(out.encode())
            data = b""
            s.settimeout(5)
            while True:
                chunk = s.recv(65536)
                data += chunk
                if self._complete(data):
                    return data.decode(errors="replace")

    @staticmethod
    def _complete(data):
        if data.startswith(b"$"):
            head, _, rest = data.partition(b"\r\n")
            n = int(head[1:])
            return n < 0 or len(rest) >= n + 2
        return data.endswith(b"\r\n")

    def commandstats(self):
        stats = {}
        for m in re.finditer(r"cmdstat_([a-z|]+):calls=(\d+)", self.cmd("INFO", "commandstats")):
            stats[m.group(1)] = int(m.group(2))
        return stats

    def used_memory(self):
        return int(re.search(r"used_memory:(\d+)", self.cmd("INFO", "memory")).group(1))

    def dbsize(self):
        return int(self.cmd("DBSIZE").strip().lstrip(":"))


def prefill(redis, sessions):
    """Files `sessions` synthetic login sessions the way Cloakroom lays them out (a hash with
    packed metadata and a login time, and a user index entry), so that throughput can be
    measured with a large store. Sent through `redis-cli --pipe` in batches."""
    now = int(time.time() * 1000)
    day, week = 86_400_000, 604_800_000
    batch = 50_000
    for start in range(0, sessions, batch):
        out = []
        for i in range(start, min(sessions, start + batch)):
            key = f"sid:fill{i:018d}"
            meta = f"{now}|{day}|{week}|1|filler{i}"
            for args in (("HSET", key, "__m", meta, "login_time", str(now)),
                         ("PEXPIRE", key, str(day)),
                         ("HSET", f"sid:users:{i % 256}", f"filler{i}", key[4:])):
                out.append(f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args))
        subprocess.run(["redis-cli", "-p", str(redis.port), "--pipe"], input="".join(out).encode(),
                       capture_output=True, check=True, timeout=600)
    return redis.dbsize()


def request(port, method, path, cookie=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Cookie": cookie} if cookie else {}
    conn.request(method, path, headers=headers)
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    # Every cookie set (the session cookie, and cloakroom-fallback's ticket), as a Cookie header.
    pairs = [c.split(";")[0] for c in resp.msg.get_all("set-cookie") or []]
    conn.close()
    return resp.status, body, ("; ".join(pairs) if pairs else None)


def login(port, user="alice", need_cookie=True):
    status, body, cookie = request(port, "POST", f"/api/login?user={user}")
    assert status == 200 and (cookie or not need_cookie), (status, body)
    return cookie


def wrk(port, method, path, cookie, seconds, connections):
    script = os.path.join(HERE, f"wrk-{method.lower()}.lua")
    with open(script, "w") as f:
        f.write(f'wrk.method = "{method}"\n')
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", script,
            f"http://127.0.0.1:{port}{path}"]
    if cookie:
        args[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, int(errors.group(1)) if errors else 0


def cpu_seconds(pid):
    """CPU time (user + system) of a process and all its descendants, from /proc."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(cpu_seconds(int(child)) for child in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


# Commands Cloakroom's script-free write sends inside one MULTI ... EXEC (one round trip).
INSIDE_TRANSACTIONS = {"multi", "hincrby", "hmget", "hset", "hdel", "pexpire"}


def per_request(before, after, requests):
    """Top-level commands (round trips) and all commands, per request. A script counts once
    (not the commands it runs), and so does a MULTI ... EXEC transaction (counted by its EXEC)."""
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    diff = {k: v for k, v in diff.items() if v > 0 and k not in HARNESS}
    scripted = "evalsha" in diff or "eval" in diff
    transacted = "exec" in diff
    top = sum(v for k, v in diff.items()
              if not (scripted and k in INSIDE_SCRIPTS)
              and not (transacted and k in INSIDE_TRANSACTIONS))
    mix = {k: round(v / requests, 2) for k, v in sorted(diff.items())}
    return top / requests, sum(diff.values()) / requests, mix


def concurrent_increments(port, n=200):
    cookie = login(port, "racer")
    barrier = threading.Barrier(n)
    statuses = []

    def hit():
        barrier.wait(timeout=30)
        statuses.append(request(port, "POST", "/api/visits", cookie)[0])

    threads = [threading.Thread(target=hit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    status, body, _ = request(port, "POST", "/api/visits", cookie)
    kept = json.loads(body)["visits"] - 1 if status == 200 else None
    return kept, sum(1 for s in statuses if s == 200)


def memory_per_session(redis, port, sessions):
    redis.cmd("FLUSHALL")
    time.sleep(0.2)
    before = redis.used_memory()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(sessions):
        conn.request("POST", f"/api/login?user=user{i}")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status
    conn.close()
    time.sleep(0.2)
    return (redis.used_memory() - before) / sessions, redis.dbsize()


def outage_stall(redis, port):
    cookie = login(port, "outage")
    redis.stop()
    started = time.time()
    try:
        status = request(port, "GET", "/api/profile", cookie, timeout=30)[0]
    except Exception as e:  # a hang or a dropped connection
        status = type(e).__name__
    stalled = time.time() - started
    redis.start()
    return status, stalled


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--only", default=",".join(SERVERS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prefill", type=int, default=0,
                    help="file this many other sessions in Redis before measuring (flat cost)")
    opts = ap.parse_args()
    for tool in ["redis-server", "wrk"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} missing: apt-get install {tool}")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=HERE, check=True)
    if "express" in opts.only:
        if not shutil.which("npm"):
            raise SystemExit("node and npm missing (needed for express-session): apt-get install nodejs npm")
        if not os.path.isdir(os.path.join(EXPRESS, "node_modules")):
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=EXPRESS,
                           check=True)
    redis = Redis()
    results = {}
    # Servers take turns within each run, so a slow spell of the machine hits them all;
    # throughput is the median over runs, the one-off checks run in the first.
    for run in range(opts.runs):
        for name in opts.only.split(","):
            r = measure(name, redis, opts, first=run == 0)
            if run == 0:
                results[name] = r
            else:
                for label in LABELS:
                    for series in ("all", "app_us", "redis_us"):
                        results[name][label][series] += r[label][series]
            print(name, json.dumps(r), file=sys.stderr)
    for r in results.values():
        for label in LABELS:
            r[label]["rps"] = statistics.median(r[label]["all"])
            r[label]["app"] = statistics.median(r[label]["app_us"])
            r[label]["redis"] = statistics.median(r[label]["redis_us"])
    redis.stop()
    report(results, opts)


def measure(name, redis, opts, first):
    port = free_port()
    binary, extra = BINARIES.get(name, (name, {}))
    env = dict(os.environ, PORT=str(port), REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
               RUST_LOG="error", **extra)
    if binary == "express-session":
        command = ["node", os.path.join(EXPRESS, "server.js")]
    else:
        command = [os.path.join(HERE, "target/release", f"bench-{binary}")]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        redis.cmd("FLUSHALL")
        if opts.prefill:
            prefill(redis, opts.prefill)
        r = {}
        cookie = login(port, need_cookie=name not in BASELINES)
        if name in BASELINES:
            # Every request of the session servers carries a cookie; the baselines get one of
            # a typical length too (nothing reads it), so that parsing the header is not
            # counted as session cost.
            cookie = "sid=" + "A" * 64
        wrk(port, "GET", "/api/profile", cookie, 2, opts.connections)  # warm-up
        for label, method, path in ROUTES:
            before = redis.commandstats()
            cpu_before = cpu_seconds(server.pid), cpu_seconds(redis.proc.pid)
            rps, total, errors = wrk(port, method, path, cookie, opts.seconds, opts.connections)
            cpu = [(cpu_seconds(p) - b) * 1e6 / total
                   for p, b in zip((server.pid, redis.proc.pid), cpu_before)]
            top, every, diff = per_request(before, redis.commandstats(), total)
            r[label] = dict(all=[rps], errors=errors, round_trips=top, commands=every, diff=diff,
                            app_us=[cpu[0]], redis_us=[cpu[1]])
        if first and name not in BASELINES | {"cloakroom-memory", "cloakroom-strict"}:
            r["kept"], r["ok"] = concurrent_increments(port)
            r["bytes"], r["keys"] = memory_per_session(redis, port, opts.sessions)
            r["outage"] = outage_stall(redis, port)
        return r
    finally:
        server.kill()
        server.wait(timeout=10)


def session_cost(results):
    """Each library's session cost per request: app µs above its own framework's no-session
    baseline (measured in the same run), plus redis-server µs."""
    rows = [n for n in results if FRAMEWORK.get(n) in results]
    if not rows:
        return
    print("\nSession cost per request: app µs above the library's own framework with no "
          "sessions (axum: `baseline`, actix-web: `actix-baseline`, Express: "
          "`express-baseline`), plus redis-server µs (medians):\n")
    print("| library | framework baseline | read: app + Redis µs | write: app + Redis µs |")
    print("| --- | --- | --- | --- |")
    for name in rows:
        base = results[FRAMEWORK[name]]
        cells = []
        for label in ("read", "write"):
            app = results[name][label]["app"] - base[label]["app"]
            red = results[name][label]["redis"]
            cells.append(f"{app:.1f} + {red:.1f} = {app + red:.1f}")
        print(f"| {name} | {FRAMEWORK[name]} | {cells[0]} | {cells[1]} |")


def cost(results, name, label):
    base = results[FRAMEWORK[name]][label]
    r = results[name][label]
    return r["app"] - base["app"] + r["redis"]


def targets(results, peers):
    """The fast-by-default targets, against the best peer of this run."""
    if "cloakroom" not in results or not peers:
        return
    c = results["cloakroom"]
    best = {label: max(peers, key=lambda p: results[p][label]["rps"]) for label in ("read", "write")}
    print()
    for label in ("read", "write"):
        p = best[label]
        ratio = c[label]["rps"] / results[p][label]["rps"]
        want = 1.3 if label == "read" else 1.0
        print(f"- default {label} vs best peer ({p}): {ratio:.2f}× (target ≥ {want}×), "
              f"{c[label]['commands']:.2f} Redis commands")
        if FRAMEWORK.get(p) in results and FRAMEWORK["cloakroom"] in results:
            ours, theirs = cost(results, "cloakroom", label), cost(results, p, label)
            bound = 0.5 if label == "read" else 1.0
            print(f"- default session cost per {label}: {ours:.1f} µs vs {theirs:.1f} µs: "
                  f"{ours / theirs:.2f}× (target ≤ {bound}×)")
    if "cloakroom-strict" in results and FRAMEWORK.get(best["read"]) in results:
        ours, theirs = cost(results, "cloakroom-strict", "read"), cost(results, best["read"], "read")
        print(f"- strict session cost per read: {ours:.1f} µs vs {theirs:.1f} µs: "
              f"{ours / theirs:.2f}× (target ≤ 1.25×)")
    if "baseline" in results:
        u = c["untouched"]["rps"] / results["baseline"]["untouched"]["rps"]
        print(f"- untouched vs baseline: {u:.2f}× (target ≥ 0.95×), "
              f"{c['untouched']['commands']:.2f} Redis commands (target 0)")
    if "tower-sessions" in results and "bytes" in c:
        t = results["tower-sessions"]["bytes"]
        print(f"- Redis bytes per session vs tower-sessions: {c['bytes']:,.0f} vs {t:,.0f}")


def report(results, opts):
    base = results.get("baseline")
    peers = [n for n in ("tower-sessions", "actix-session", "express-session") if n in results]
    prefilled = f" --prefill {opts.prefill}" if opts.prefill else ""
    print(f"Command: `bench/run.py --runs {opts.runs} --seconds {opts.seconds} "
          f"--connections {opts.connections} --sessions {opts.sessions}{prefilled}` "
          f"({time.strftime('%Y-%m-%d')}); req/s are medians over the runs\n")
    print("| server | read req/s | write req/s | untouched req/s | round trips / read "
          "| round trips / write | Redis commands / read, write, untouched "
          "| 200 concurrent increments kept | bytes / session | request while Redis is down |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        def cell(key, fmt):
            return fmt.format(r[key]) if key in r else "—"
        outage = (f"{r['outage'][0]} after {r['outage'][1]:.2f} s" if "outage" in r else "—")
        print(f"| {name} | {r['read']['rps']:,.0f} | {r['write']['rps']:,.0f} "
              f"| {r['untouched']['rps']:,.0f} "
              f"| {r['read']['round_trips']:.2f} | {r['write']['round_trips']:.2f} "
              f"| {r['read']['commands']:.2f}, {r['write']['commands']:.2f}, "
              f"{r['untouched']['commands']:.2f} "
              f"| {cell('kept', '{}')} / 200 | {cell('bytes', '{:,.0f}')} | {outage} |")
    print("\nCPU time per request during the wrk runs (medians; from /proc, the server with its "
          "worker processes):\n")
    print("| server | read: app µs | read: redis-server µs | write: app µs "
          "| write: redis-server µs |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        rd, wr = r["read"], r["write"]
        print(f"| {name} | {rd['app']:.1f} | {rd['redis']:.1f} | {wr['app']:.1f} "
              f"| {wr['redis']:.1f} |")
    session_cost(results)
    targets(results, peers)
    print("\nRedis commands per request (INFO commandstats; script-internal ones included):\n")
    for name, r in results.items():
        for label in LABELS:
            mix = ", ".join(f"{k} {v}" for k, v in r[label]["diff"].items()) or "none"
            print(f"- {name}, {label}: {mix}")


if __name__ == "__main__":
    main()
