"""A bounded load test of `weaver serve` on 127.0.0.1 (issue 14).

Builds a lake (tests.lakes.standard_lake: a real split, two weaves, woven rows from the oracle
fold), starts `weaver serve` on a free loopback port with a bearer token, and drives it with
`--clients` concurrent asyncio/httpx clients for a fixed number of requests or a time limit,
whichever comes first: woven-snapshot reads, recoveries (JSON and NDJSON pages) and bad requests
(malformed instant, unknown partition, out-of-range confidence, no token). Then it stops the
server. Records throughput, p50/p99 latency per kind, status counts (5xx: goal 0; 429 is the
configured recovery limit answering), and the server's RSS before and after.

    PYTHONPATH=$PWD .venv/bin/python bench/api_load.py [--requests 3000] [--clients 16] [--time-limit 180]

Writes bench/results/api_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import machine  # noqa: E402

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def requests_plan(lake, n: int, seed: int) -> list[tuple[str, str, str, dict]]:
    """(kind, method, path, kwargs) for n requests: 45 % woven reads, 35 % recoveries, 20 % bad."""
    rng = random.Random(seed)
    n_changes = len(lake.changes)
    live = next(iter(lake.weaves.values()))
    tps = [lake.ts_of(q) for q in range(n_changes // 4, n_changes + 1, max(1, n_changes // 40))]
    plan = []
    for _ in range(n):
        r = rng.random()
        at = rng.choice(tps).isoformat()
        if r < 0.45:
            child = rng.choice([live["left"], live["right"]])
            plan.append(("woven_read", "GET", "/v1/woven-snapshots",
                         {"params": {"partition_id": child, "timepoint": at, "confidence_threshold": 0.5,
                                     "format": rng.choice(["json", "ndjson"]), "limit": rng.choice([100, 5000])}}))
        elif r < 0.80:
            pid = rng.choice(["P0", "P1", "P2", "P3"])
            plan.append(("recovery", "POST", "/v1/recoveries",
                         {"json": {"partition_id": pid, "timepoint": at},
                          "params": {"format": rng.choice(["json", "ndjson"])}}))
        else:
            bad = rng.choice([
                ("GET", "/v1/woven-snapshots", {"params": {"partition_id": "P0", "timepoint": "yesterday"}}),
                ("POST", "/v1/recoveries", {"json": {"partition_id": "NOPE", "timepoint": at}}),
                ("GET", "/v1/woven-snapshots", {"params": {"partition_id": "P0", "timepoint": at,
                                                           "confidence_threshold": 7}}),
                ("POST", "/v1/recoveries", {"json": {"partition_id": "P0"}}),
                ("NOAUTH", "/v1/partitions", {}),
            ])
            plan.append(("bad_request", *bad))
    return plan


async def drive(base: str, plan: list, clients: int, time_limit_s: float,
                samples: list | None = None, pid: int | None = None) -> tuple[list[dict], float]:
    """Run `plan` with `clients` concurrent clients; with `samples`, append (requests done, server
    RSS KiB) about once a second, so memory can be followed through the run, not only at its ends."""
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    results: list[dict] = []
    deadline = time.perf_counter() + time_limit_s
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty() and time.perf_counter() < deadline:
            kind, method, path, kw = queue.get_nowait()
            headers = {} if method == "NOAUTH" else auth
            t = time.perf_counter()
            try:
                resp = await client.request("GET" if method == "NOAUTH" else method, path, headers=headers, **kw)
                await resp.aread()
                status = resp.status_code
            except httpx.HTTPError as exc:
                status = f"transport:{type(exc).__name__}"
            results.append({"kind": kind, "status": status, "ms": (time.perf_counter() - t) * 1000.0})

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async def sampler() -> None:
        while True:
            samples.append((len(results), rss_kib(pid)))
            await asyncio.sleep(1.0)

    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as client:
        task = asyncio.create_task(sampler()) if samples is not None else None
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        if task is not None:
            task.cancel()
    return results, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=180.0)
    ap.add_argument("--changes", type=int, default=4000, help="size of the lake's change log")
    ap.add_argument("--max-recoveries", type=int, default=4)
    args = ap.parse_args()

    from tests.lakes import standard_lake

    tmp = Path(tempfile.mkdtemp(prefix="weaver-api-load-"))
    t_build = time.perf_counter()
    lake = standard_lake(tmp / "lake", n=args.changes, api_token=TOKEN)
    build_s = time.perf_counter() - t_build
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEAVER_")}
    env.update({"PYTHONPATH": str(ROOT), "WEAVER_API_TOKEN": TOKEN,
                "WEAVER_API_MAX_RECOVERIES": str(args.max_recoveries)})
    server = subprocess.Popen([sys.executable, "-c", "from weaver.cli import main; main()", "serve", "--host",
                               "127.0.0.1", "--port", str(port), "--lake", str(tmp / "lake")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"weaver serve exited: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        warm = requests_plan(lake, 40, seed=1)
        asyncio.run(drive(base, warm, 4, 60.0))  # first reads load the Delta handles
        rss_before = rss_kib(server.pid)
        plan = requests_plan(lake, args.requests, seed=2)
        samples: list[tuple[int, int]] = []
        results, wall = asyncio.run(drive(base, plan, args.clients, args.time_limit, samples, server.pid))
        rss_after = rss_kib(server.pid)
        samples.append((len(results), rss_after))
        alive = server.poll() is None
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    by_kind: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_kind[r["kind"]].append(r["ms"])
        statuses[r["kind"]][str(r["status"])] += 1
    all_ms = [r["ms"] for r in results]
    n5xx = sum(1 for r in results if isinstance(r["status"], int) and r["status"] >= 500)
    transport = sum(1 for r in results if not isinstance(r["status"], int))
    bad_4xx = sum(1 for r in results if r["kind"] == "bad_request" and isinstance(r["status"], int)
                  and 400 <= r["status"] < 500)
    n_bad = len(by_kind["bad_request"])
    half = len(results) // 2
    half_rss = next((r for n, r in samples if n >= half), rss_after)
    figures = {
        "requests_planned": args.requests, "requests_done": len(results), "wall_s": round(wall, 2),
        "throughput_rps": round(len(results) / wall, 1) if wall else None,
        "latency_ms": {"p50": quantile(all_ms, 0.5), "p99": quantile(all_ms, 0.99),
                       **{f"{k}_p50": quantile(v, 0.5) for k, v in by_kind.items()},
                       **{f"{k}_p99": quantile(v, 0.99) for k, v in by_kind.items()}},
        "statuses": {k: dict(v) for k, v in statuses.items()},
        "count_5xx": n5xx, "transport_errors": transport,
        "bad_requests_answered_4xx": f"{bad_4xx}/{n_bad}",
        "count_429": sum(1 for r in results if r["status"] == 429),
        "rss_kib_before": rss_before, "rss_kib_after": rss_after,
        # (requests done, RSS KiB) through the run; "flat" = the second half adds (almost) nothing.
        "rss_kib_samples": samples, "rss_kib_at_half": half_rss,
        "server_alive_after": alive, "lake_build_s": round(build_s, 1),
    }
    result = {"bench": "api_load", "machine": machine("fastapi", "uvicorn", "deltalake", "httpx"),
              "date": datetime.now(timezone.utc).isoformat(),
              "params": {"requests": args.requests, "clients": args.clients, "time_limit_s": args.time_limit,
                         "changes": args.changes, "api_max_recoveries": args.max_recoveries,
                         "mix": "45% woven-snapshot reads, 35% recoveries, 20% bad requests"},
              "ratios": {"rss_after_over_before": round(rss_after / rss_before, 3) if rss_before > 0 else None,
                         "rss_after_over_half": round(rss_after / half_rss, 3) if half_rss > 0 else None,
                         "share_5xx": round(n5xx / len(results), 4) if results else None},
              "figures": figures}
    (ROOT / "bench" / "results" / "api_load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0 if n5xx == 0 and transport == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
