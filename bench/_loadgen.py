"""Load generators for POST /v1/segment, run as a separate process from the servers.

`wrk_run` drives wrk (C, one thread per core asked) with a Lua script that makes every
messageId unique; `python_run` starts this file as a process with an aiohttp client.
Both return {"requests", "seconds", "rps", "p50_ms", "p99_ms", "errors", "client_cpu_s"}.

    python bench/_loadgen.py URL --conns 32 --seconds 10 --batch 1 --nonce X
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_LUA = r"""
counter = 0
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "%AUTH%"}
local nonce, batch, users, first, random_ids = "x", 1, 10000, 0, false
local nthreads = 0

function setup(thread)
  thread:set("threadid", nthreads)
  nthreads = nthreads + 1
end

function init(args)
  nonce = args[1]
  batch = tonumber(args[2])
  users = tonumber(args[3])
  first = tonumber(args[4] or "0")
  random_ids = args[5] == "random"
  math.randomseed(os.time() + (threadid or 0))
end

-- Every event its own millisecond (as real traffic has), and the context analytics.js sends.
local function ts(id)
  local s = math.floor(id / 1000)
  return string.format("2026-05-01T%%02d:%%02d:%%02d.%%03dZ", math.floor(s / 3600) %% 24,
    math.floor(s / 60) %% 60, s %% 60, id %% 1000)
end

-- "random": a random 64-bit prefix, so each id lands apart from the others in the b-tree as
-- uuid4 messageIds do; otherwise each id lands next to the previous ones.
local function message_id(id)
  local clustered = string.format("%%s-%%d-%%d", nonce, threadid, id)
  if not random_ids then return clustered end
  return string.format("%%08x%%08x-", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
    .. clustered
end

local function msg(id)
  return string.format('{"type":"track","userId":"u%%d","event":"Bench Event",' ..
    '"messageId":"%%s","timestamp":"%%s","context":{"library":{"name":"bench"},' ..
    '"timezone":"Europe/Berlin","locale":"de-DE"},"properties":{"plan":"pro","n":%%d}}',
    first + id %% users, message_id(id), ts(id), id)
end

function request()
  local body
  if batch == 1 then
    counter = counter + 1
    body = msg(counter)
  else
    local parts = {}
    for i = 1, batch do
      counter = counter + 1
      parts[i] = msg(counter)
    end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format("POST", "%PATH%", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wrk_run(url: str, key: str, *, conns: int, seconds: float, batch: int, nonce: str,
            users: int, threads: int, workdir: Path, path: str = "/v1/segment",
            first_user: int = 0, ids: str = "clustered") -> dict[str, Any]:
    script = workdir / f"load-{nonce}.lua"
    script.write_text(_LUA.replace("%AUTH%", auth(key)).replace("%PATH%", path)
                      .replace("%%", "%"))
    before = _children_cpu()
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{max(1, round(seconds))}s",
         "--timeout", "10s", "-s", str(script), url + path, "--", nonce, str(batch), str(users),
         str(first_user), ids],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = _children_cpu() - before
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("WRKJSON "):])
    secs = r["duration_us"] / 1e6
    return {"requests": r["requests"], "seconds": secs, "rps": r["requests"] / secs,
            "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "max_ms": r["max_us"] / 1000,
            "errors": r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"],
            "client_cpu_s": cpu, "tool": f"wrk -t{threads} -c{conns}"}


def python_run(url: str, key: str, *, conns: int, seconds: float, batch: int, nonce: str,
               users: int, max_requests: int = 2_000_000, path: str = "/v1/segment",
               ids: str = "clustered") -> dict[str, Any]:
    before = _children_cpu()
    out = subprocess.run(
        [sys.executable, __file__, url + path, "--key", key, "--conns", str(conns),
         "--seconds", str(seconds), "--batch", str(batch), "--nonce", nonce,
         "--users", str(users), "--max-requests", str(max_requests), "--ids", ids],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = _children_cpu() - before
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["client_cpu_s"] = cpu
    r["tool"] = f"python aiohttp -c{conns}"
    return r


# --- the Python load generator process --------------------------------------------------

def _message(nonce: str, worker: int, n: int, users: int, random_ids: bool = False) -> str:
    # The same shape as the wrk script's: each event its own millisecond, analytics.js context.
    s = n // 1000
    ts = f"2026-05-01T{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{n % 1000:03d}Z"
    prefix = f"{random.getrandbits(64):016x}-" if random_ids else ""
    return (f'{{"type":"track","userId":"u{n % users}","event":"Bench Event",'
            f'"messageId":"{prefix}{nonce}-p{worker}-{n}","timestamp":"{ts}",'
            f'"context":{{"library":{{"name":"bench"}},"timezone":"Europe/Berlin",'
            f'"locale":"de-DE"}},"properties":{{"plan":"pro","n":{n}}}}}')


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    headers = {"Content-Type": "application/json", "Authorization": auth(args.key)}
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + args.seconds
    connector = aiohttp.TCPConnector(limit=args.conns)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker(w: int) -> None:
            nonlocal errors, sent
            n = 0
            while time.perf_counter() < deadline and sent < args.max_requests:
                sent += 1
                if args.batch == 1:
                    n += 1
                    body = _message(args.nonce, w, n, args.users, args.ids == "random")
                else:
                    parts = []
                    for _ in range(args.batch):
                        n += 1
                        parts.append(_message(args.nonce, w, n, args.users, args.ids == "random"))
                    body = "[" + ",".join(parts) + "]"
                t0 = time.perf_counter()
                try:
                    async with session.post(args.url, data=body.encode(), headers=headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(args.conns)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": latencies[-1] * 1000 if latencies else 0.0, "errors": errors}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--key", default="bench-key")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--nonce", default="py")
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--max-requests", type=int, default=2_000_000)
    p.add_argument("--ids", choices=("clustered", "random"), default="clustered")
    print(json.dumps(asyncio.run(_main(p.parse_args()))))
