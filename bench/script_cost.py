#!/usr/bin/env python3
"""Redis server cost per request, counted in instructions, not seconds.

Runs one loopback redis-server under valgrind's callgrind and counts the instructions it
executes for each request path: the peers' reads and writes (GET; GET + SET of a 72-byte
string, tower-sessions' login record) and ours (HGETALL of a login session; the apply script
incrementing a counter; the load script sliding the idle deadline). Instruction counts repeat
exactly for the same binary and input, so this measures what the wall-clock harness
(run.py) cannot on a noisy shared machine: how much of one Redis thread each request uses,
which is what caps every app instance that shares that Redis.

Needs: redis-server, valgrind. Usage: bench/script_cost.py [--calls N] [--breakdown]
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import free_port, wait_port  # noqa: E402

LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "stores", "redis", "src",
                   "lua")
NOW = 1_795_394_499_940
DAY, WEEK = 86_400_000, 604_800_000
KEY, LIVE = "session:jnEfQVTP-YI-gQHPZYrwqg", "session:live"
# The apply script's arguments for one increment of `visits`, with the layer's default limits
# (now, prefix, then the layout at the top of apply_fn.lua).
APPLY_ARGS = (NOW, "session:", 0, "", "", "", 64, 16384, 0, 0, 1, "visits", 1)
# The scripts built on the shared write function (scripts.rs concatenates the same files).
WITH_APPLY_FN = {"apply.lua", "cycle.lua"}


def lua(name):
    """A session script as the store loads it: the prelude, the write function, the script."""
    parts = ["prelude.lua"] + (["apply_fn.lua"] if name in WITH_APPLY_FN else []) + [name]
    text = ""
    for part in parts:
        with open(os.path.join(LUA, part)) as f:
            text += f.read()
    return text


def encode(*args):
    out = f"*{len(args)}\r\n"
    for a in args:
        a = str(a)
        out += f"${len(a.encode())}\r\n{a}\r\n"
    return out.encode()


class Server:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-callgrind-")
        self.out = os.path.join(self.dir, "callgrind.out")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}",
             "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, limit=60)

    def send(self, payload, replies):
        """Pipes raw commands and reads `replies` replies through redis-cli's --pipe mode."""
        run = subprocess.run(["redis-cli", "-p", str(self.port), "--pipe"], input=payload,
                             capture_output=True, timeout=300)
        tail = run.stdout.decode().strip().splitlines()[-1]
        if f"errors: 0, replies: {replies}" not in tail:
            raise SystemExit(f"redis-cli --pipe: {tail}")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *map(str, args)],
                              capture_output=True, text=True, timeout=60, check=True).stdout.strip()

    def control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], capture_output=True,
                       timeout=60, check=True)

    def instructions(self, commands, calls):
        """Instructions the server executes for `calls` repeats of `commands` (pipelined)."""
        payload = b"".join(encode(*c) for c in commands)
        self.send(payload * 50, 50 * len(commands))  # warm-up
        for f in glob.glob(self.out + ".*"):
            os.remove(f)
        self.control("-z")
        self.send(payload * calls, calls * len(commands))
        self.control("-d")
        # The dump is written in the background: wait (bounded) for its totals line.
        for _ in range(100):
            for dump in glob.glob(self.out + ".*"):
                with open(dump) as f:
                    for line in f:
                        if line.startswith(("summary:", "totals:")):
                            return int(line.split()[1])
            time.sleep(0.1)
        raise SystemExit("no totals in the callgrind dump after 10 s")

    def stop(self):
        if self.proc.poll() is None:
            self.cli("SHUTDOWN", "NOSAVE")
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def session(server):
    """A login session laid out as the create script files it."""
    server.cli("DEL", KEY)
    server.cli("HSET", KEY, "__m", f"{NOW}|{DAY}|{WEEK}|1|user1234",
               "login_time", NOW)
    server.cli("PEXPIRE", KEY, DAY)


def breakdown(server, calls):
    """Where the apply script's instructions go: cut-down variants with the same keys and
    arguments, each adding one part. The differences between rows are the parts' prices."""
    with open(os.path.join(LUA, "prelude.lua")) as p:
        prelude = p.read()
    apply = lua("apply.lua")[len(prelude):]
    final = "return (apply_to(KEYS[1], ARGV, 2, tonumber(ARGV[1]), ARGV[2]))"
    assert final in apply, "apply.lua's last line changed: update this breakdown"
    variants = [
        (f"empty script, same 2 keys and {len(APPLY_ARGS)} arguments", "return 1"),
        ("+ the shared helpers (prelude)", prelude + "return 1"),
        ("empty + HMGET of the checked fields", "local m = redis.call('HMGET', KEYS[1], '__m', "
         "'visits') return 1"),
        ("empty + HSET of two fields", "redis.call('HSET', KEYS[1], 'visits', 5, '__v', 7) "
         "return 1"),
        ("apply, replying `1` instead of its result",
         prelude + apply.replace(final, "apply_to(KEYS[1], ARGV, 2, tonumber(ARGV[1]), ARGV[2]) "
                                        "do return 1 end")),
        ("apply as shipped", prelude + apply),
    ]
    print("\nThe apply script in parts (the same call as above, cut down):\n")
    print("| variant | Redis instructions per call |")
    print("| --- | --- |")
    for label, body in variants:
        session(server)
        sha = server.cli("SCRIPT", "LOAD", body)
        n = server.instructions([("EVALSHA", sha, 2, KEY, LIVE, *APPLY_ARGS)], calls) / calls
        print(f"| {label} | {n:,.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--breakdown", action="store_true",
                    help="also price the apply script's parts")
    opts = ap.parse_args()
    for tool in ["redis-server", "redis-cli", "valgrind", "callgrind_control"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} missing: apt-get install redis-server valgrind")
    server = Server()
    try:
        apply = server.cli("SCRIPT", "LOAD", lua("apply.lua"))
        load = server.cli("SCRIPT", "LOAD", lua("load.lua"))
        tower = "x" * 72
        server.cli("SET", "sZeZ0xNrZC-zUPxSo9umcg", tower, "PX", DAY)
        session(server)
        rows = [
            ("peers' read: GET", [("GET", "sZeZ0xNrZC-zUPxSo9umcg")]),
            ("peers' write: GET + SET", [("GET", "sZeZ0xNrZC-zUPxSo9umcg"),
                                         ("SET", "sZeZ0xNrZC-zUPxSo9umcg", tower, "PX", DAY)]),
            ("Cloakroom read: HGETALL", [("HGETALL", KEY)]),
            ("Cloakroom write: apply script (increment)",
             [("EVALSHA", apply, 2, KEY, LIVE, *APPLY_ARGS)]),
            ("Cloakroom write without a script: MULTI, HINCRBY, HMGET, PEXPIRE NX, EXEC",
             [("MULTI",), ("HINCRBY", KEY, "visits", 1), ("HMGET", KEY, "__m", "__to", "__g"),
              ("PEXPIRE", KEY, 60000, "NX"), ("EXEC",)]),
            ("Cloakroom read through the load script, no refresh due",
             [("EVALSHA", load, 2, KEY, LIVE, NOW, "", "")]),
            # Refresh due on every call: the deadline it asks for is always later.
            ("Cloakroom read with refresh due: load script",
             [("EVALSHA", load, 2, KEY, LIVE, NOW, NOW + 2 * WEEK, NOW + DAY)]),
            ("empty script: EVALSHA of `return 1`",
             [("EVALSHA", server.cli("SCRIPT", "LOAD", "return 1"), 0)]),
        ]
        flags = f"--calls {opts.calls}" + (" --breakdown" if opts.breakdown else "")
        print(f"Command: `python3 bench/script_cost.py {flags}` "
              f"({time.strftime('%Y-%m-%d')}; redis-server {server.cli('INFO', 'server').split('redis_version:')[1].split()[0]})\n")
        print("| request path | Redis instructions per request |")
        print("| --- | --- |")
        for label, commands in rows:
            n = server.instructions(commands, opts.calls) / opts.calls
            print(f"| {label} | {n:,.0f} |")
        if opts.breakdown:
            breakdown(server, opts.calls)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
