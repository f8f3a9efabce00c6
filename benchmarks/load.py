"""The load generator of the serving benchmarks: closed loop (N clients back to back) and open
loop (a fixed arrival rate, latency from each request's scheduled start), over aiohttp (cheap per
request) or httpx, with latency percentiles and the CPU each side spent per request."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    q = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return {"p50_ms": float(q[0]), "p95_ms": float(q[1]), "p99_ms": float(q[2])}


CLIENTS = ("aiohttp", "httpx")
Posted = tuple[int, float | None, dict[str, float]]  # status, Retry-After s, server timings ms


@contextlib.asynccontextmanager
async def poster(kind: str, url: str, connections: int) -> Any:
    """An async `post(path, body) -> (status, Retry-After seconds or None, server timings)` over
    `connections` keep-alive connections; the timings are the service's `x-*-time-ms` headers
    (total, queue, ...; empty for servers without them)."""
    if kind == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=connections)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

            async def post_aiohttp(path: str, body: Any) -> Posted:
                async with session.post(path, json=body) as r:
                    await r.read()
                    return r.status, _retry_after(r.headers.get("retry-after")), _timings(r.headers)

            yield post_aiohttp
        return
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def post_httpx(path: str, body: Any) -> Posted:
            r = await client.post(path, json=body)
            return r.status_code, _retry_after(r.headers.get("retry-after")), _timings(r.headers)

        yield post_httpx


def _timings(headers: Any) -> dict[str, float]:
    """The service's timing headers (``x-queue-time-ms: 3.2`` -> ``{"queue": 3.2}``)."""
    out = {}
    for name, value in headers.items():
        key = name.lower()
        if key.startswith("x-") and key.endswith("-time-ms"):
            with contextlib.suppress(ValueError):
                out[key[2:-8]] = float(value)
    return out


def _retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when None), threads included."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerView:
    """The service's own view of the answered requests, from its timing headers: ``server``
    (from reading the request to the answer), ``queue`` (waiting for a batch) and
    ``inference``; what the client measured beyond ``server`` was spent before the server read
    the request (its front end and the machine) or after it answered."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {"total": [], "queue": [], "inference": []}

    def add(self, timings: dict[str, float]) -> None:
        for name, values in self.values.items():
            if name in timings:
                values.append(timings[name] / 1000)

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {
            ("server" if name == "total" else name): percentiles(values)
            for name, values in self.values.items()
            if values
        }


async def closed_loop(
    url: str,
    path: str,
    bodies: list[Any],
    concurrency: int,
    seconds: float,
    warmup: float,
    client: str = "aiohttp",
    server_pid: int | None = None,
) -> dict[str, Any]:
    """`concurrency` clients back to back for warmup + seconds; only the last `seconds` count
    (CPU per request too: the server's, from /proc, and this load generator's). A client refused
    with Retry-After waits that long before its next request, as a well-behaved client does.
    With the service's timing headers, also its own view (`ServerView`)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    server = ServerView()
    errors = 0
    statuses: Counter[int] = Counter()
    cpu: dict[str, float] = {}
    async with poster(client, url, concurrency) as post:
        t_start = loop.time()
        t_measure, t_end = t_start + warmup, t_start + warmup + seconds

        async def mark() -> None:
            await asyncio.sleep(max(0.0, t_measure - loop.time()))
            cpu["client"] = cpu_seconds()
            cpu["server"] = cpu_seconds(server_pid) if server_pid else 0.0

        async def client_loop(i: int) -> None:
            nonlocal errors
            k = i
            while (t0 := loop.time()) < t_end:
                status, retry_after, timings = await post(path, bodies[k % len(bodies)])
                k += concurrency
                if t0 >= t_measure:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(loop.time() - t0)
                        server.add(timings)
                    else:
                        errors += 1
                if retry_after is not None and status in (429, 503):
                    await asyncio.sleep(min(retry_after, max(0.0, t_end - loop.time())))

        await asyncio.gather(mark(), *(client_loop(i) for i in range(concurrency)))
        elapsed = loop.time() - t_measure
        client_cpu = cpu_seconds() - cpu["client"]
        server_cpu = cpu_seconds(server_pid) - cpu["server"] if server_pid else float("nan")
    n = max(len(latencies), 1)
    return {"requests": len(latencies), "errors": errors, "statuses": dict(statuses),
            "throughput": len(latencies) / elapsed, **percentiles(latencies),
            "server_cpu_ms": 1000 * server_cpu / n,
            "client_cpu_ms": 1000 * client_cpu / n, **server.percentiles()}  # fmt: skip


async def open_loop(
    url: str,
    path: str,
    bodies: list[Any],
    rate: float,
    seconds: float,
    cap: int = 512,
    client: str = "aiohttp",
) -> dict[str, Any]:
    """Requests at a fixed rate; latency from each request's scheduled start (no coordinated
    omission); at most `cap` in flight (more are counted as dropped). With the service's timing
    headers, also its own view (`ServerView`)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    server = ServerView()
    errors = dropped = 0
    statuses: Counter[int] = Counter()
    in_flight = 0
    async with poster(client, url, cap) as post:

        async def one(body: Any, scheduled: float) -> None:
            nonlocal errors, in_flight
            try:
                status, _, timings = await post(path, body)
                statuses[status] += 1
                if status == 200:
                    latencies.append(loop.time() - scheduled)
                    server.add(timings)
                else:
                    errors += 1
            finally:
                in_flight -= 1

        start = loop.time() + 0.05
        tasks = []
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            if in_flight >= cap:
                dropped += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], scheduled)))
        await asyncio.gather(*tasks)
    return {"rate": rate, "requests": len(latencies), "errors": errors, "dropped": dropped,
            "statuses": dict(statuses), **percentiles(latencies),
            **server.percentiles()}  # fmt: skip
