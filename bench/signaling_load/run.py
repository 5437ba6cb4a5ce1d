"""Signaling under load: many simulated participants joining calls of three and negotiating.

Scenarios (each on a fresh `kijkmee serve` process, started as a user starts it):

- capacity: N participants (default 10,002: 3,334 full calls) connect over WSS and join (a few at a
  time per load process, so the server keeps answering pings), exchange offer/answer/candidates with the
  others of their call, and stay connected for `--hold` seconds, answering Engine.IO pings. Reported: how
  many are still connected and joined at the end, and the server's resident memory before the first
  connection and at the end (per connection).
- latency: joins at fixed rates (default 100/s and 500/s, 10 s each, open loop: each join is sent on
  schedule whatever the answers do); join sent → ack with the peer list, p50/p99.
- throughput: M pre-connected participants join as fast as the server answers (a window of outstanding
  joins per load process): joins per second, and the server's CPU seconds per join.
- throughput and latency again on one node and on two nodes sharing Redis (`--redis`) and one
  PostgreSQL database, calls spread over both nodes; the two-node / one-node ratio.
- instructions: the server under valgrind's callgrind while `--instruction-joins` participants (default
  300) join and negotiate: the instructions it executes per join. Unlike CPU time this does not change
  with the machine's speed (which drifts several-fold here from day to day) or with what else runs, so
  it compares code across runs and days (repeats within ~2 %). Skipped when valgrind is missing.

Load processes (client.py) run beside the server on the same machine: on two cores they take a large
share of the CPU, and the .md says so. Results: bench/results/signaling_load.json and .md.
`--quick` runs every scenario small, as a smoke test (its figures are not the benchmark's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
CLIENT = Path(__file__).with_name("client.py")
POSTGRES_SERVER = "127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

GOALS = {"participants": 10_000, "p99_ms": 50.0, "at_rate": 500, "two_node_ratio": 1.7}


# -- processes ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


@dataclass
class Serve:
    url: str
    process: asyncio.subprocess.Process
    log: Path


async def start_serve(work: Path, name: str, extra: Sequence[str] = (), prefix: Sequence[str] = (),
                      timeout: float = 60) -> Serve:
    """`kijkmee serve` on a free port; `prefix`: a command that runs it (valgrind)."""
    data = work / name
    log = work / f"{name}.log"
    process = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "kijkmee", "serve", "--port", "0", "--turn-port", "0", "--turns-port", "0",
        "--data-dir", str(data), "--log-level", "warning", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=log.open("w"), cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(process.stdout.readline(), timeout)).decode()
        if not line:
            break
        found = re.search(r"Open (https://\S+) in your browser", line)
        if found:
            return Serve(found.group(1), process, log)
    process.kill()
    raise RuntimeError(f"kijkmee serve did not start: {log.read_text()[-2000:]}")


async def stop_serve(serve: Serve) -> None:
    if serve.process.returncode is None:
        serve.process.terminate()
        try:
            await asyncio.wait_for(serve.process.wait(), 30)
        except TimeoutError:
            serve.process.kill()
            await serve.process.wait()


class Workers:
    """Load processes (client.py), each with its share of the participants."""

    def __init__(self, processes: list[asyncio.subprocess.Process]) -> None:
        self.processes = processes

    @classmethod
    async def start(cls, people: list[list[tuple[str, str]]]) -> Workers:
        processes = []
        for _share in people:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(CLIENT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                cwd=ROOT, limit=1 << 26,
            )
            processes.append(process)
        workers = cls(processes)
        await workers.ask_each([{"people": share} for share in people])
        return workers

    async def ask_each(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async def one(process: asyncio.subprocess.Process, message: dict[str, Any]) -> dict[str, Any]:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write((json.dumps(message) + "\n").encode())
            await process.stdin.drain()
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError("a load process ended early")
            answer: dict[str, Any] = json.loads(line)
            return answer

        return list(await asyncio.gather(*(one(p, m) for p, m in zip(self.processes, messages, strict=True))))

    async def ask(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.ask_each([message] * len(self.processes))

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.processes if p.returncode is None)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask({"cmd": "close"}), 60)
        for process in self.processes:
            if process.returncode is None:
                process.kill()
            await process.wait()


# -- rooms and people -------------------------------------------------------------------------------


async def create_rooms(base_url: str, count: int) -> list[str]:
    """Call links made the way the home page makes them (POST /rooms), 32 at a time."""
    rooms: list[str] = []
    connector = aiohttp.TCPConnector(ssl=False, limit=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def one() -> None:
            async with http.post(f"{base_url}/rooms") as response:
                response.raise_for_status()
                rooms.append(str((await response.json())["room_id"]))

        for start in range(0, count, 256):
            await asyncio.gather(*(one() for _ in range(min(256, count - start))))
    return rooms


def assign(rooms: list[str], urls: list[str], workers: int) -> list[list[tuple[str, str]]]:
    """Whole calls per load process (members in join order); with two nodes the members of a call
    alternate between them, so every call spans both nodes."""
    shares: list[list[tuple[str, str]]] = [[] for _ in range(workers)]
    for index, room in enumerate(rooms):
        shares[index % workers] += [(room, urls[(index + member) % len(urls)]) for member in range(3)]
    return shares


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summed_counts(answers: list[dict[str, Any]], field: str) -> dict[str, int]:
    """The load processes' counts under `field` ({reason: count} each), added up."""
    total: dict[str, int] = {}
    for answer in answers:
        for key, count in answer[field].items():
            total[key] = total.get(key, 0) + count
    return total


def summarize_joins(answers: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for a in answers for x in a["latencies"]]
    lateness = [x for a in answers for x in a["lateness"]]
    negotiated = [x for a in answers for x in a["negotiated"]]
    errors = summed_counts(answers, "errors")
    first = min(a["first"] for a in answers)
    last = max(a["last"] for a in answers)
    span = max(last - first, 1e-9)
    return {
        "joins": len(latencies), "errors": errors, "seconds": round(span, 3),
        "joins_per_second": round(len(latencies) / span, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1), "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "negotiated": len(negotiated), "negotiations_expected": sum(a["negotiations_expected"] for a in answers),
        "negotiation_p50_ms": round(percentile(negotiated, 0.5) * 1000, 1),
        "negotiation_p99_ms": round(percentile(negotiated, 0.99) * 1000, 1),
        "signal_errors": sum(a["signal_errors"] for a in answers),
        "schedule_lateness_p99_ms": round(percentile(lateness, 0.99) * 1000, 1) if lateness else None,
        "dropped": sum(a["alive_before"] - a["alive_after"] for a in answers),
    }


# -- the backends of the multi-node scenarios ---------------------------------------------------------


@dataclass
class Shared:
    """A fresh PostgreSQL database and a Redis key prefix for one scenario, removed afterwards."""

    database_url: str
    redis_prefix: str


@contextlib.asynccontextmanager
async def shared_backends() -> AsyncIterator[Shared]:
    import asyncpg
    import redis.asyncio as aioredis

    name = f"kijkmee_bench_{os.getpid()}_{secrets.token_hex(3)}"
    prefix = f"kijkmee-bench-{secrets.token_hex(4)}:"
    admin = await asyncpg.connect(f"postgresql://postgres@{POSTGRES_SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield Shared(f"postgresql://postgres@{POSTGRES_SERVER}/{name}", prefix)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
        await client.aclose()


async def multi_node_unavailable() -> str | None:
    """Why the Redis scenarios cannot run here, or None."""
    from kijkmee.config import ServeConfig

    if "redis" not in {f.name for f in dataclasses.fields(ServeConfig)}:
        return "kijkmee serve has no --redis option yet"
    try:
        import asyncpg
        import redis.asyncio as aioredis

        connection = await asyncpg.connect(f"postgresql://postgres@{POSTGRES_SERVER}/postgres", timeout=5)
        await connection.close()
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        await client.ping()
        await client.aclose()
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_SERVER} or Redis at {REDIS_URL} not reachable ({type(exc).__name__})"
    return None


# -- scenarios -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def nodes(work: Path, tag: str, count: int, shared: Shared | None) -> AsyncIterator[list[Serve]]:
    extra: list[str] = []
    if shared is not None:  # one database and one key folder for all nodes (deploy/README.md, "The key folder")
        extra = ["--database-url", shared.database_url, "--redis", REDIS_URL, "--redis-prefix", shared.redis_prefix,
                 "--key-dir", str(work / f"{tag}-keys")]
    servers = [await start_serve(work, f"{tag}-node{i + 1}", extra) for i in range(count)]
    try:
        yield servers
    finally:
        for server in servers:
            await stop_serve(server)


def connect_summary(answers: list[dict[str, Any]]) -> dict[str, Any]:
    failures = summed_counts(answers, "failures")
    seconds = max(a["seconds"] for a in answers)
    connected = sum(a["connected"] for a in answers)
    return {"connected": connected, "connect_failures": failures, "connect_seconds": round(seconds, 1),
            "connects_per_second": round(connected / max(seconds, 1e-9), 1)}


async def idle_cpu(servers: list[Serve], seconds: float = 3.0) -> float:
    """CPU seconds per second the servers spend with everyone connected and nothing happening (pings)."""
    before = sum(cpu_seconds(s.process.pid) for s in servers)
    await asyncio.sleep(seconds)
    return (sum(cpu_seconds(s.process.pid) for s in servers) - before) / seconds


async def capacity(work: Path, people: int, args: argparse.Namespace) -> dict[str, Any]:
    async with nodes(work, "capacity", 1, None) as [server]:
        rooms = await create_rooms(server.url, -(-people // 3))
        await asyncio.sleep(1.0)
        rss_before = rss_bytes(server.process.pid)
        workers = await Workers.start(assign(rooms, [server.url], args.workers))
        try:
            connected = connect_summary(await workers.ask({"cmd": "connect", "window": args.connect_window}))
            joins = summarize_joins(await workers.ask({"cmd": "join", "window": args.capacity_window,
                                                       "start_at": time.time() + 0.5}))
            held = await workers.ask({"cmd": "hold", "seconds": args.hold})
            rss_after = rss_bytes(server.process.pid)
            idle = await idle_cpu([server])
        finally:
            await workers.close()
        alive = sum(h["alive_after"] for h in held)
        return {
            "participants": len(rooms) * 3, **connected,
            "joined": joins["joins"], "join_errors": joins["errors"], "joins_per_second": joins["joins_per_second"],
            "join_p99_ms": joins["p99_ms"], "dropped_while_joining": joins["dropped"],
            "hold_seconds": args.hold, "held_at_start_of_hold": sum(h["alive_before"] for h in held),
            "held_at_end": alive, "joined_at_end": sum(h["joined"] for h in held),
            "negotiated": joins["negotiated"], "negotiations_expected": joins["negotiations_expected"],
            "rss_before_mb": round(rss_before / 2**20, 1), "rss_after_mb": round(rss_after / 2**20, 1),
            "rss_per_connection_kb": round((rss_after - rss_before) / max(alive, 1) / 1024, 1),
            "idle_server_cpu_percent": round(idle * 100, 1),
        }


async def timed_joins(work: Path, tag: str, node_count: int, people: int, rate: float | None,
                      args: argparse.Namespace, shared: Shared | None) -> dict[str, Any]:
    """One round of joins on fresh nodes: at `rate` (open loop) or as fast as they are answered."""
    async with nodes(work, tag, node_count, shared) as servers:
        rooms = await create_rooms(servers[0].url, -(-people // 3))
        workers = await Workers.start(assign(rooms, [s.url for s in servers], args.workers))
        try:
            connected = connect_summary(await workers.ask({"cmd": "connect", "window": args.connect_window}))
            idle = await idle_cpu(servers)
            server_cpu = [cpu_seconds(s.process.pid) for s in servers]
            worker_cpu = workers.cpu()
            command: dict[str, Any] = {"cmd": "join", "start_at": time.time() + 0.5, "window": args.window}
            if rate is not None:
                command["rate"] = rate / args.workers
            result = summarize_joins(await workers.ask(command))
            spent = [cpu_seconds(s.process.pid) - before for s, before in zip(servers, server_cpu, strict=True)]
            round_seconds = result["seconds"] + 2.5  # the round as the servers saw it (start delay, tail)
            result["server_cpu_seconds"] = [round(x, 2) for x in spent]
            result["server_cpu_ms_per_join"] = round(sum(spent) / max(result["joins"], 1) * 1000, 2)
            result["server_idle_cpu_percent"] = round(idle * 100, 1)
            result["server_cpu_ms_per_join_net"] = round(
                max(0.0, sum(spent) - idle * round_seconds) / max(result["joins"], 1) * 1000, 2)
            result["load_cpu_seconds"] = round(workers.cpu() - worker_cpu, 2)
        finally:
            await workers.close()
    result.update({"nodes": node_count, "participants": len(rooms) * 3, **connected,
                   "target_rate": rate, "window_per_load_process": None if rate else args.window})
    return result


def callgrind_total(dump: Path) -> int:
    """The instruction count of a callgrind dump (its `totals:` line)."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError(f"no totals in {dump}")


async def instructions(work: Path, people: int, args: argparse.Namespace) -> dict[str, Any]:
    """The server's instructions per join (callgrind), counted over the join round only: connecting
    (TLS handshakes) and starting up are left out. Joins go 4 at a time per load process: under callgrind
    the server runs about 50 times slower, and must still answer every ping."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return {"skipped": "valgrind (callgrind) is not installed: apt-get install valgrind"}
    dumps = work / "callgrind"
    dumps.mkdir()
    prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dumps}/cg.%p"]
    server = await start_serve(work, "instructions", prefix=prefix, timeout=300)
    pid = str(server.process.pid)

    async def control(option: str) -> None:
        done = await asyncio.create_subprocess_exec("callgrind_control", option, pid, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        if await done.wait() != 0:
            raise RuntimeError(f"callgrind_control {option} {pid} failed")

    try:
        rooms = await create_rooms(server.url, -(-people // 3))
        workers = await Workers.start(assign(rooms, [server.url], args.workers))
        try:
            connect_summary(await workers.ask({"cmd": "connect", "window": 8}))
            await asyncio.sleep(2.0)
            await control("--instr=on")
            joined = summarize_joins(await workers.ask({"cmd": "join", "start_at": time.time() + 0.5, "window": 4}))
            await asyncio.sleep(2.0)  # the last negotiations
            await control("--dump")
            await control("--instr=off")
        finally:
            await workers.close()
    finally:
        await stop_serve(server)
    total = callgrind_total(next(dumps.glob(f"cg.{pid}.1")))
    return {"joins": joined["joins"], "errors": joined["errors"], "negotiated": joined["negotiated"],
            "negotiations_expected": joined["negotiations_expected"], "instructions": total,
            "million_instructions_per_join": round(total / max(joined["joins"], 1) / 1e6, 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="kijkmee-signaling-load-") as folder:
        work = Path(folder)
        print(f"capacity: {args.participants} participants, hold {args.hold} s", flush=True)
        results["capacity"] = await capacity(work, args.participants, args)
        print(f"  {results['capacity']}", flush=True)

        async def series(key: str, count: int, shared_backend: bool) -> dict[str, Any]:
            block: dict[str, Any] = {}
            backend = "Redis + PostgreSQL" if shared_backend else "SQLite"
            for rate in rates:
                print(f"latency, {count} node(s), {backend}: {rate:.0f} joins/s for {args.rate_seconds} s", flush=True)
                async with contextlib.AsyncExitStack() as stack:
                    shared = await stack.enter_async_context(shared_backends()) if shared_backend else None
                    block[f"latency_{rate:.0f}"] = await timed_joins(
                        work, f"{key}-rate{rate:.0f}", count, int(rate * args.rate_seconds), rate, args, shared)
                print(f"  {block[f'latency_{rate:.0f}']}", flush=True)
            print(f"throughput, {count} node(s), {backend}: {args.burst} joins", flush=True)
            async with contextlib.AsyncExitStack() as stack:
                shared = await stack.enter_async_context(shared_backends()) if shared_backend else None
                block["throughput"] = await timed_joins(work, f"{key}-burst", count, args.burst, None, args, shared)
            print(f"  {block['throughput']}", flush=True)
            return block

        results["sqlite_1_node"] = await series("sqlite_1_node", 1, False)
        print(f"instructions: {args.instruction_joins} joins under callgrind", flush=True)
        results["instructions"] = await instructions(work, args.instruction_joins, args)
        print(f"  {results['instructions']}", flush=True)
        why_not = await multi_node_unavailable()
        results["multi_node_skipped"] = why_not
        if why_not is None:
            for count in (1, 2):
                results[f"redis_{count}_node"] = await series(f"redis_{count}_node", count, True)
            one = results["redis_1_node"]["throughput"]["joins_per_second"]
            two = results["redis_2_node"]["throughput"]["joins_per_second"]
            results["two_node_ratio"] = round(two / one, 2) if one else None
        else:
            print(f"multi-node scenarios skipped: {why_not}", flush=True)
        if args.keep_logs is not None:  # the servers' own logs (JSON lines, no personal data), for errors
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


# -- report ----------------------------------------------------------------------------------------


QUICK_NOTE = "**Quick smoke run (`--quick`): small numbers, not the benchmark's figures.**\n\n"


def met(value: bool) -> str:
    return "yes" if value else "**no**"


def row(name: str, r: dict[str, Any]) -> str:
    window = f"{r['window_per_load_process']} in flight per load process"
    rate = f"{r['target_rate']:.0f}/s" if r["target_rate"] else window
    return (f"| {name} | {r['nodes']} | {rate} | {r['joins']:,} | {r['joins_per_second']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} | {r['server_cpu_ms_per_join']} ({r['server_cpu_ms_per_join_net']}) | "
            f"{r['server_idle_cpu_percent']} % | {r['load_cpu_seconds']} | {sum(r['errors'].values())} | "
            f"{r['dropped']} | {r['negotiated']:,}/{r['negotiations_expected']:,} |")


def report(results: dict[str, Any]) -> str:
    cap, one = results["capacity"], results["sqlite_1_node"]
    goal_rate = f"latency_{GOALS['at_rate']}"
    lat = one.get(goal_rate)
    m = results["machine"]
    settings = results["settings"]
    lines = [
        "# signaling_load", "",
        (QUICK_NOTE if settings["quick"] else "")
        + f"Simulated participants (raw Engine.IO/Socket.IO WebSocket clients in {settings['workers']} load "
        f"processes, bench/signaling_load/README.md) against `kijkmee serve` on this machine: {m['cpus']} cores "
        f"({m['cpu']}), Python {m['python']}, 1-minute load average {m['load_average_at_start'][0]} when the run "
        f"began and {results.get('load_average_at_end', ['?'])[0]} when it ended ({results['started']} to "
        f"{results['finished']}). **The load processes run on the same two cores as "
        "the server(s)**, and other work on this machine may have too: every rate below is what the server "
        "reached while sharing the CPU; *server CPU ms/join* is what carries over to a dedicated core. Each "
        "scenario starts fresh server processes; each join is followed by the offer/answer/candidate exchange "
        "of a 3-way mesh.",
        "",
        "| figure | measured | goal | met |", "|---|---|---|---|",
        f"| participants held concurrently by one process ({cap['hold_seconds']:.0f} s hold, all joined) | "
        f"{cap['held_at_end']:,} of {cap['participants']:,} (joined at the end: {cap['joined_at_end']:,}) | "
        f"≥ {GOALS['participants']:,} | {met(cap['held_at_end'] >= GOALS['participants'])} |",
    ]
    if lat is not None:
        latency_met = lat["p99_ms"] <= GOALS["p99_ms"] and lat["joins_per_second"] >= 0.95 * GOALS["at_rate"]
        lines.append(
            f"| join → peer-list at {GOALS['at_rate']} joins/s, one node (SQLite) | p50 {lat['p50_ms']} ms, p99 "
            f"{lat['p99_ms']} ms; answered {lat['joins_per_second']} joins/s | p99 ≤ {GOALS['p99_ms']:.0f} ms at "
            f"{GOALS['at_rate']} joins/s | {met(latency_met)} |")
    for key, r in one.items():
        if key.startswith("latency_") and key != goal_rate:
            lines.append(f"| join → peer-list at {r['target_rate']:.0f} joins/s, one node (SQLite) | p50 {r['p50_ms']} "
                         f"ms, p99 {r['p99_ms']} ms; answered {r['joins_per_second']} joins/s | — | — |")
    lines += [
        f"| joins per second, one node (SQLite), as fast as answered | {one['throughput']['joins_per_second']} "
        f"(server CPU {one['throughput']['server_cpu_ms_per_join']} ms/join) | — | — |",
        f"| memory per connection (RSS of serve before the first and with {cap['held_at_end']:,} connections) | "
        f"{cap['rss_per_connection_kb']} KB ({cap['rss_before_mb']} → {cap['rss_after_mb']} MB) | — | — |",
    ]
    counted = results.get("instructions", {"skipped": "not measured"})
    if "skipped" in counted:
        lines.append(f"| server instructions per join (callgrind) | not measured: {counted['skipped']} | — | — |")
    else:
        speed = one["throughput"]["server_cpu_ms_per_join"]
        lines.append(
            f"| server instructions per join (callgrind, {counted['joins']:,} joins with their negotiation, one node, "
            f"SQLite): the same whatever the machine's speed | {counted['million_instructions_per_join']} million "
            f"(so this run's {speed} ms/join ran at about "
            f"{counted['million_instructions_per_join'] / speed:.2f} million instructions per ms) | — | — |")
    if results.get("multi_node_skipped"):
        lines.append(f"| two nodes / one node, join rate | not run: {results['multi_node_skipped']} | "
                     f"≥ {GOALS['two_node_ratio']} | — |")
    else:
        r1, r2 = results["redis_1_node"]["throughput"], results["redis_2_node"]["throughput"]
        ratio = results["two_node_ratio"]
        complete = all(r["negotiated"] == r["negotiations_expected"] and not r["errors"] for r in (r1, r2))
        caveat = "" if complete else (
            f" (but negotiations finished within 2 s of the last join: {r1['negotiated']:,}/"
            f"{r1['negotiations_expected']:,} on one node, {r2['negotiated']:,}/{r2['negotiations_expected']:,} on "
            f"two; errors {sum(r1['errors'].values())} / {sum(r2['errors'].values())})")
        ratio_met = ratio is not None and ratio >= GOALS["two_node_ratio"]
        lines.append(
            f"| joins per second on Redis + PostgreSQL, one node → two nodes | {r1['joins_per_second']} → "
            f"{r2['joins_per_second']}: ratio {ratio}{caveat} | ≥ {GOALS['two_node_ratio']} | "
            f"{met(ratio_met) if complete else 'join rate yes, signaling **no**' if ratio_met else met(False)} |")
    lines += ["", "## Every round", "",
              "| scenario | nodes | pace | joins | joins/s | p50 ms | p99 ms | max ms | server CPU ms/join (net of "
              "idle) | server idle CPU | load CPU s | errors | dropped | negotiated |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    blocks = [("SQLite", one)]
    if not results.get("multi_node_skipped"):
        blocks += [("Redis + PostgreSQL", results["redis_1_node"]), ("Redis + PostgreSQL", results["redis_2_node"])]
    for backend, block in blocks:
        for key, r in block.items():
            lines.append(row(f"{key.split('_')[0]}, {backend}", r))
    lines += [
        "",
        f"Capacity: {cap['participants']:,} participants connected {settings['connect_window']} handshakes at a "
        f"time per load process ({cap['connected']:,} connected in {cap['connect_seconds']} s, "
        f"{cap['connects_per_second']}/s; failures {cap['connect_failures'] or 'none'}), joined "
        f"{settings['capacity_window']} at a time per load process ({cap['joined']:,} joins, "
        f"{cap['joins_per_second']}/s, p99 {cap['join_p99_ms']} ms; {cap['dropped_while_joining']} connections "
        f"dropped meanwhile), {cap['negotiated']:,} of {cap['negotiations_expected']:,} newcomers finished "
        f"negotiating; {cap['held_at_start_of_hold']:,} connected when the {cap['hold_seconds']:.0f} s hold began, "
        f"{cap['held_at_end']:,} at its end. The server's CPU with everyone connected and idle (Engine.IO pings "
        f"every 10 s): {cap['idle_server_cpu_percent']} % of a core.",
        "",
        "Columns: *pace* is a fixed join rate (open loop, joins sent on schedule whatever the answers do) or a "
        "window of outstanding joins per load process (closed loop: as fast as answered). *server CPU ms/join* "
        "is the serve processes' CPU over the round divided by the joins, with the negotiation traffic they "
        "cause; in brackets without the CPU the same connections take when idle. *dropped*: connections that "
        "ended during the round (the server closes one whose pong is 5 s late). *negotiated*: newcomers that "
        "got an answer from everyone already in their call, of those that found someone there.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every scenario small, for a smoke run")
    parser.add_argument("--participants", type=int, default=10_002, help="capacity scenario (default 10,002)")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the capacity scenario holds everyone")
    parser.add_argument("--connect-window", type=int, default=16, help="handshakes in flight per load process")
    parser.add_argument("--capacity-window", type=int, default=16, help="joins in flight per load process "
                        "while the capacity scenario fills up")
    parser.add_argument("--rates", default="100,500", help="join rates of the latency rounds (comma-separated)")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="duration of each latency round")
    parser.add_argument("--burst", type=int, default=3_000, help="participants of the throughput rounds")
    parser.add_argument("--window", type=int, default=16, help="joins in flight per load process (throughput)")
    parser.add_argument("--workers", type=int, default=2, help="load processes")
    parser.add_argument("--instruction-joins", type=int, default=300,
                        help="participants of the instruction count under callgrind (default 300)")
    parser.add_argument("--keep-logs", type=Path, metavar="FOLDER", help="copy the servers' logs there")
    parser.add_argument("--out", type=Path, help="results path without suffix (default: bench/results/signaling_load;"
                        " with --quick a temporary folder, so a smoke run never replaces the results)")
    args = parser.parse_args()
    if args.quick:
        args.participants, args.hold, args.rate_seconds, args.burst = 600, 3.0, 2.0, 900
        args.instruction_joins = 60
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "signaling_load.quick" if args.quick else RESULTS / "signaling_load"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers and load processes inherit it
    needed = args.participants + 1000
    if hard < needed:
        print(f"warning: open-file limit {hard} < {needed}; raise it (ulimit -n) for the capacity run",
              file=sys.stderr)
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
