"""Our TURN relay (`kijkmee relay`, one asyncio process) against coturn (Debian package, one relay thread).

Each server is pinned to core 0, everything that makes load (generators, echo peers, this driver) to
core 1; the servers run side by side and are exercised in alternating order (A/B, then B/A). Parts:

1. uclient: coturn's own load tool, `turnutils_uclient -c` (ChannelData) with `turnutils_peer` as echo
   peer: payloads 180/1000 B, 10/50/200 sessions, paced (-z 20) and unpaced (-z 0). Loss, relayed
   packets/s and server CPU per relayed packet (CPU from "Total connect time" to the final counts).
2. rate search: `pump` (pump.c, one C thread: paced ChannelData sender, recvmmsg/sendmmsg echo peer,
   receiver recording every round trip) on sessions set up by turnctl.py. Highest rate with <= 0.1 %
   loss per configuration; CPU per relayed packet at that rate; then p99 round trip at 50 % of each
   server's maximum and, for both, at 50 % of the lower maximum (same load).
3. memory: 10,000 allocations (each with a permission and a channel) on a fresh server; RSS growth.

A relayed packet is one datagram the server forwarded: an echoed message is two (client -> peer,
peer -> client). Counted the same way for both servers. Writes bench/results/relay_vs_coturn.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.relay_vs_coturn import servers as srv  # noqa: E402
from bench.relay_vs_coturn import turnctl  # noqa: E402
from bench.relay_vs_coturn.report import write_markdown  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = ROOT / "bench" / "results"
SECRET = "relay-bench-secret"
LOSS_LIMIT = 0.001
FOREIGN_LIMIT = 0.10
"""Share of a bench core that other work may take during a measured run before it is repeated."""
GENERATOR_CORE = [1]
BENCH_PIDS: set[int] = set()
"""Processes of this bench (servers, echo peer) that do not count as other load."""
PORTS = {"coturn": 3578, "ours": 3678, "metrics": 9178, "peer": 3480}
RELAY_PORTS = {"coturn": (8000, 19999), "ours": (20000, 31999)}  # disjoint, below the ephemeral range


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- machine -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    coturn = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "coturn"], capture_output=True, text=True).stdout
    venv_python = ROOT / ".venv" / "bin" / "python"
    uvloop = subprocess.run([str(venv_python), "-c", "import uvloop; print(uvloop.__version__)"],
                            capture_output=True, text=True).stdout.strip() or None
    fast_path = subprocess.run([str(venv_python), "-c", "import turn_relay._fastpath"],
                               capture_output=True).returncode == 0  # kijkmee relay uses it when built
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "os": platform.platform(),
        "python": platform.python_version(), "coturn_package": coturn, "uvloop_in_venv": uvloop,
        "fast_path_built": fast_path, "gcc": gcc[0] if gcc else None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ip_local_port_range": Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split(),
        "rmem_max": int(Path("/proc/sys/net/core/rmem_max").read_text()),
    }


# -- /proc/net/udp drops -------------------------------------------------------------------------


def udp_drops() -> dict[int, int]:
    """Datagrams the kernel dropped per local UDP port (receive queue full), all sockets."""
    drops: dict[int, int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        port = int(parts[1].split(":")[1], 16)
        drops[port] = drops.get(port, 0) + int(parts[-1])
    return drops


def drop_delta(before: dict[int, int], after: dict[int, int], server: str, client_ports: set[int],
               peer_port: int) -> dict[str, int]:
    out = {"server_listener": 0, "server_relayed": 0, "generator_clients": 0, "generator_peer": 0, "other": 0}
    low, high = RELAY_PORTS[server]
    for port, count in after.items():
        delta = count - before.get(port, 0)
        if delta <= 0:
            continue
        if port == PORTS[server]:
            out["server_listener"] += delta
        elif low <= port <= high:
            out["server_relayed"] += delta
        elif port in client_ports:
            out["generator_clients"] += delta
        elif port == peer_port:
            out["generator_peer"] += delta
        else:
            out["other"] += delta
    return out


# -- part 1: turnutils_uclient -------------------------------------------------------------------

PROGRESS = re.compile(r"msz=(\d+), tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
FINAL = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
LOST = re.compile(r"Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+)")


UCLIENT_GROUP = 25
"""Sessions per turnutils_uclient process. Each process binds its own loopback source address (-L): our
relay rate-limits unauthenticated requests per source host (10/s, burst 50) and uclient makes two per
session (a probe allocation, then the real one), 10 sessions a second; 200 sessions from one address make
it give up. Several processes also connect in parallel (uclient connects its sessions 100 ms apart)."""


def run_uclient(server: srv.Server, peer: subprocess.Popen[bytes], sessions: int, size: int, interval: int,
                messages: int, gen_core: int, timeout: float) -> dict[str, Any]:
    groups = [UCLIENT_GROUP] * (sessions // UCLIENT_GROUP) + ([sessions % UCLIENT_GROUP] if sessions % UCLIENT_GROUP
                                                                else [])
    argvs = [["taskset", "-c", str(gen_core), "turnutils_uclient", "-c", "-W", SECRET, "-u", "bench",
              "-e", "127.0.0.1", "-r", str(PORTS["peer"]), "-n", str(messages), "-m", str(count), "-l", str(size),
              "-z", str(interval), "-L", f"127.2.0.{i + 1}", "-p", str(server.port), "127.0.0.1"]
             for i, count in enumerate(groups)]
    result: dict[str, Any] = {"server": server.name, "sessions": sessions, "size": size, "z": interval,
                              "messages_per_session": messages, "processes": len(argvs),
                              "commands": [" ".join(a) for a in argvs]}
    srv.wait_quiet({os.getpid(), *BENCH_PIDS})
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True) for argv in argvs]
    sel = selectors.DefaultSelector()
    for index, proc in enumerate(procs):
        assert proc.stdout is not None
        sel.register(proc.stdout, selectors.EVENT_READ, index)
    n = len(procs)
    buffers = [b""] * n
    tails: list[list[str]] = [[] for _ in range(n)]
    connected = [False] * n
    latest = [(0, 0)] * n
    finals: list[tuple[int, int] | None] = [None] * n
    lost: list[dict[str, Any] | None] = [None] * n
    open_streams = n
    start = time.monotonic()
    mark: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    progress: list[tuple[float, int, int]] = []
    stopped_early = False
    total = sessions * messages
    gen_pids = {p.pid for p in procs}

    def sample() -> dict[str, Any]:
        return {"t": time.monotonic(), "cpu": server.cpu(), "runtime": srv.proc_runtime(server.pid),
                "core": srv.core_busy(server.core), "peer": srv.proc_cpu(peer.pid),
                "gen": sum(srv.proc_cpu(p.pid) for p in procs if p.returncode is None),
                "snap": srv.process_cpu_snapshot()}

    try:
        while open_streams and end is None:
            if time.monotonic() - start > timeout:
                result["timeout"] = True
                break
            for key, _ in sel.select(1.0):
                index = key.data
                chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                buffers[index] += chunk
                *lines, buffers[index] = buffers[index].split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    tails[index] = [*tails[index][-20:], line]
                    if not connected[index] and "Total connect time" in line:
                        connected[index] = True
                        if all(connected):
                            mark = sample()
                    elif (m := PROGRESS.search(line)) is not None:
                        latest[index] = (int(m[2]), int(m[3]))
                        if mark is not None:
                            progress.append((time.monotonic(), sum(x[0] for x in latest), sum(x[1] for x in latest)))
                    elif (m := FINAL.search(line)) is not None:
                        finals[index] = latest[index] = (int(m[1]), int(m[2]))
                    elif (m := LOST.search(line)) is not None:
                        lost[index] = {"lost": int(m[1]), "percent": float(m[2]), "send_dropped": int(m[3])}
                if mark is not None and all(f is not None for f in finals):
                    end = sample()
                    break
                # unpaced runs with loss: uclient waits 10 s for stragglers; stop once nothing moves for 2 s
                if (mark is not None and progress and progress[-1][1] >= total
                        and any(t <= progress[-1][0] - 2.0 for t, _, r in progress if r == progress[-1][2])):
                    end = sample()
                    stopped_early = True
                    break
    finally:
        sel.close()
        for proc in procs:
            srv.kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    generator_cpu = (children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime
                     - (mark["gen"] if mark is not None else 0.0))  # uclient CPU from the mark until it exited
    if mark is None or end is None:
        result["error"] = "uclient did not finish (no connect line or no final counts)"
        result["output_tail"] = tails
        return result
    sent, received = sum(x[0] for x in latest), sum(x[1] for x in latest)
    result["uclient_loss_lines"] = lost
    relayed = 2 * received
    rates = []  # over windows of >= 1 s: each process reports once a second, at its own moment
    for i, (t0, _, r0) in enumerate(progress):
        later = next((p for p in progress[i + 1 :] if p[0] - t0 >= 1.0), None)
        if later is not None:
            rates.append((later[2] - r0) / (later[0] - t0))
    started = [p for p in progress if p[1] == 0]
    t_first = started[-1][0] if started else mark["t"]
    done = [p for p in progress if p[2] >= received]
    t_last = done[0][0] if done else end["t"]
    wall = end["t"] - mark["t"]
    result.update({
        "sent": sent, "received": received, "loss": (sent - received) / sent if sent else None,
        "stopped_early": stopped_early, "relayed_packets": relayed,
        "relayed_pps_mean": relayed / (t_last - t_first) if t_last > t_first else None,
        "relayed_pps_peak_1s": 2 * max(rates) if rates else None,
        "server_cpu_s": end["cpu"] - mark["cpu"], "server_runtime_s": end["runtime"] - mark["runtime"],
        "core_busy_s": end["core"] - mark["core"],
        "cpu_us_per_packet": 1e6 * (end["cpu"] - mark["cpu"]) / relayed if relayed else None,
        "runtime_us_per_packet": 1e6 * (end["runtime"] - mark["runtime"]) / relayed if relayed else None,
        "core_us_per_packet": 1e6 * (end["core"] - mark["core"]) / relayed if relayed else None,
        "generator_cpu_us_per_message": 1e6 * (generator_cpu + end["peer"] - mark["peer"]) / received
        if received else None,
        "wall_s": wall,
        "foreign_cores": srv.foreign_cpu(mark["snap"], end["snap"], {os.getpid(), *gen_pids, *BENCH_PIDS})[0] / wall,
    })
    result["tainted"] = result["foreign_cores"] > FOREIGN_LIMIT
    return result


# -- part 2: pump --------------------------------------------------------------------------------


def build_pump(directory: Path) -> Path:
    binary = directory / "pump"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(HERE / "pump.c")], check=True)
    return binary


class Rig:
    """Sessions on one server plus the echo-peer socket, ready for pump runs."""

    def __init__(self, server: srv.Server, count: int) -> None:
        self.server = server
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.peer.bind(("127.0.0.1", 0))
        self.peer_port = self.peer.getsockname()[1]
        self.sessions: list[turnctl.Session] = []
        errors: set[int] = set()
        used = 0
        for _ in range(3):  # a new socket may land on the 5-tuple of an allocation a killed client left behind
            opened = turnctl.open_sessions(count - len(self.sessions), SECRET.encode(), "bench", unique_users=False,
                                           rcvbuf=1 << 20, first=used)
            used += len(opened)
            allocated = turnctl.allocate(server.address, opened)
            ready = turnctl.bind_channel(server.address, allocated, ("127.0.0.1", self.peer_port))
            self.sessions += ready
            unused = [s for s in opened if s not in ready]
            errors |= {e for s in unused for e in s.errors}
            turnctl.release(server.address, unused)
            if len(self.sessions) == count:
                break
        if len(self.sessions) != count:
            self.release()
            raise RuntimeError(f"{server.name}: only {len(self.sessions)} of {count} sessions set up "
                               f"(errors {sorted(errors)})")
        for session in self.sessions:
            session.sock.connect(server.address)
        self.client_ports = {s.sock.getsockname()[1] for s in self.sessions}

    def release(self) -> None:
        """Refresh(0) every allocation (Linux lets a connected UDP socket sendto its own peer), then close."""
        with contextlib.suppress(OSError):
            turnctl.release(self.server.address, self.sessions)
        self.peer.close()


def pump_run(pump: Path, rig: Rig, size: int, rate: float, window: int, seconds: float, drain: float,
             warmup: float) -> dict[str, Any]:
    server = rig.server
    fds = [s.sock.fileno() for s in rig.sessions]
    argv = [str(pump), str(rig.peer.fileno()), str(size), f"{rate:.1f}", str(window), str(seconds), str(drain),
            str(warmup), hex(turnctl.CHANNEL), *map(str, fds)]
    exclude = {os.getpid(), *BENCH_PIDS}
    settled = srv.settle(server.pid)
    waited = srv.wait_quiet(exclude)
    drops0 = udp_drops()
    snap0 = srv.process_cpu_snapshot()
    c0, r0, k0 = server.cpu(), srv.proc_runtime(server.pid), srv.core_busy(server.core)
    g0 = srv.core_busy(GENERATOR_CORE[0])
    done = subprocess.run(argv, pass_fds=[rig.peer.fileno(), *fds], capture_output=True, text=True,
                          timeout=seconds + drain + 30)
    c1, r1, k1 = server.cpu(), srv.proc_runtime(server.pid), srv.core_busy(server.core)
    g1 = srv.core_busy(GENERATOR_CORE[0])
    foreign, softirq = srv.foreign_cpu(snap0, srv.process_cpu_snapshot(), exclude)
    drops = drop_delta(drops0, udp_drops(), server.name, rig.client_ports, rig.peer_port)
    if done.returncode != 0:
        raise RuntimeError(f"pump failed ({done.returncode}): {done.stderr.strip()}")
    out: dict[str, Any] = json.loads(done.stdout)
    relayed = out["peer_rx"] + out["received"] + out["stale"]  # every datagram relayed during the run
    sent = out["sent"]
    out.update({
        "server": server.name, "target_rate": rate,
        "achieved_rate": (sent - 1) / out["send_seconds"] if out["send_seconds"] > 0 else 0.0,
        "loss": (sent - out["received"]) / sent if sent else 1.0,
        "relayed_packets": relayed, "relayed_pps": relayed / out["send_seconds"] if out["send_seconds"] else 0.0,
        "server_cpu_s": c1 - c0, "server_runtime_s": r1 - r0, "core_busy_s": k1 - k0,
        "server_cpu_fraction": (c1 - c0) / out["total_seconds"],
        "cpu_us_per_packet": 1e6 * (c1 - c0) / relayed if relayed else None,
        "runtime_us_per_packet": 1e6 * (r1 - r0) / relayed if relayed else None,
        "core_us_per_packet": 1e6 * (k1 - k0) / relayed if relayed else None,
        "generator_cpu_fraction": (out["cpu_user"] + out["cpu_sys"]) / out["total_seconds"],
        "generator_cpu_us_per_message": 1e6 * (out["cpu_user"] + out["cpu_sys"]) / sent if sent else None,
        "drops": drops,
        "generator_core_us_per_message": 1e6 * (g1 - g0) / sent if sent else None,
        # other processes on a shared machine (cores used, both cores together): > FOREIGN_LIMIT taints a run
        "foreign_cores": foreign / out["total_seconds"], "ksoftirqd_seconds": softirq, "waited_for_quiet_s": waited,
        "waited_for_server_idle_s": settled,
    })
    out["tainted"] = out["foreign_cores"] > FOREIGN_LIMIT
    return out


def clean_run(pump: Path, rig: Rig, size: int, rate: float, window: int, seconds: float, drain: float,
              warmup: float, retries: int) -> dict[str, Any]:
    """pump_run, repeated (after a pause) while other processes took more than FOREIGN_LIMIT of a core."""
    tries = []
    for attempt in range(retries + 1):
        run = pump_run(pump, rig, size, rate, window, seconds, drain, warmup)
        tries.append(run)
        if not run["tainted"]:
            break
        if attempt < retries:
            log(f"  (other processes took {run['foreign_cores']:.0%} of a core: again)")
    best = min(tries, key=lambda r: r["foreign_cores"])
    best["attempts"] = len(tries)
    return best


def verdict(probe: dict[str, Any]) -> tuple[bool, str]:
    """(passed, what limited it) for one paced probe."""
    short = probe["achieved_rate"] < 0.97 * probe["target_rate"]
    lossy = probe["loss"] > LOSS_LIMIT
    drops = probe["drops"]
    if not short and not lossy:
        return True, ""
    if drops["server_listener"] + drops["server_relayed"] > 0:
        return False, "server"
    if short or drops["generator_clients"] + drops["generator_peer"] > 0 or probe["send_fail"]:
        return False, "generator"
    return False, "server"  # lost without a queue overflow on our side: inside the server


def rate_search(pump: Path, server: srv.Server, sessions: int, size: int, opts: argparse.Namespace) -> dict[str, Any]:
    rig = Rig(server, sessions)
    probes: list[dict[str, Any]] = []
    try:
        closed = clean_run(pump, rig, size, 0, max(4 * sessions, 64), opts.closed_loop_seconds, 0.3, 0.1,
                           opts.retries)
        closed["mode"] = "closed-loop"
        probes.append(closed)
        estimate = closed["received"] / closed["send_seconds"]
        best: dict[str, Any] | None = None
        worst: dict[str, Any] | None = None
        rate = 0.9 * estimate
        for _ in range(opts.max_probes):
            probe = clean_run(pump, rig, size, rate, 0, opts.probe_seconds, 0.3, 0.2, opts.retries)
            probe["mode"] = "paced"
            probe["passed"], probe["limited_by"] = verdict(probe)
            probes.append(probe)
            log(f"  {server.name:6} n={sessions:3} {size:4} B  {rate:9.0f} msg/s  loss {probe['loss']:.4%}  "
                f"cpu {probe['server_cpu_fraction']:.0%}  {probe['cpu_us_per_packet'] or 0:.2f} us/pkt  "
                f"{'ok' if probe['passed'] else 'FAIL (' + probe['limited_by'] + ')'}"
                f"{'  [tainted by other load]' if probe['tainted'] else ''}")
            if probe["passed"]:
                best = probe if best is None or probe["target_rate"] > best["target_rate"] else best
            else:
                worst = probe if worst is None or probe["target_rate"] < worst["target_rate"] else worst
            if worst is None:
                rate *= 1.2
            elif best is None:
                rate *= 0.75
            else:
                if worst["target_rate"] / best["target_rate"] < 1.05:
                    break
                rate = math.sqrt(worst["target_rate"] * best["target_rate"])
    finally:
        rig.release()
    result: dict[str, Any] = {"server": server.name, "sessions": sessions, "size": size, "probes": probes}
    if best is not None:
        result.update({
            "max_messages_per_s": best["target_rate"], "max_relayed_pps": best["relayed_pps"],
            "loss_at_max": best["loss"], "cpu_us_per_packet_at_max": best["cpu_us_per_packet"],
            "runtime_us_per_packet_at_max": best["runtime_us_per_packet"],
            "core_us_per_packet_at_max": best["core_us_per_packet"],
            "server_cpu_fraction_at_max": best["server_cpu_fraction"],
            "per_core_relayed_pps": best["relayed_pps"] / best["server_cpu_fraction"]
            if best["server_cpu_fraction"] > 0 else None,
            "limited_by": worst["limited_by"] if worst is not None else "not reached (search ended going up)",
            "generator_cpu_fraction_at_max": best["generator_cpu_fraction"],
        })
    return result


def latency_run(pump: Path, server: srv.Server, sessions: int, size: int, rate: float, label: str,
                opts: argparse.Namespace) -> dict[str, Any]:
    rig = Rig(server, sessions)
    try:
        run = clean_run(pump, rig, size, rate, 0, opts.latency_seconds, 0.3, 0.5, opts.retries)
    finally:
        rig.release()
    run["label"] = label
    log(f"  {server.name:6} n={sessions:3} {size:4} B  {rate:9.0f} msg/s  [{label}]  p50 {run['rtt_us']['p50']:.0f} us"
        f"  p99 {run['rtt_us']['p99']:.0f} us  loss {run['loss']:.4%}  {run['cpu_us_per_packet'] or 0:.2f} us/pkt")
    return run


# -- part 3: memory ------------------------------------------------------------------------------


def memory_test(server: srv.Server, count: int, peer: tuple[str, int]) -> dict[str, Any]:
    server.start()
    opened: list[turnctl.Session] = []
    try:
        warm = turnctl.open_sessions(100, SECRET.encode(), "warm", unique_users=True)
        opened += warm
        turnctl.bind_channel(server.address, turnctl.allocate(server.address, warm), peer)
        time.sleep(1.0)
        before = srv.rss_kib(server.pid)
        t0 = time.monotonic()
        sessions = turnctl.open_sessions(count, SECRET.encode(), "m", unique_users=True, first=len(warm))
        opened += sessions
        allocated = turnctl.allocate(server.address, sessions)
        time.sleep(0.5)
        after_allocate = srv.rss_kib(server.pid)
        bound = turnctl.bind_channel(server.address, allocated, peer)
        elapsed = time.monotonic() - t0
        time.sleep(1.0)
        after = srv.rss_kib(server.pid)
        result = {
            "server": server.name, "requested": count, "allocated": len(allocated), "with_channel": len(bound),
            "setup_seconds": elapsed, "rss_kib_before": before, "rss_kib_after_allocate": after_allocate,
            "rss_kib_after_channels": after,
            "bytes_per_allocation": 1024 * (after["VmRSS"] - before["VmRSS"]) / max(1, len(bound)),
            "bytes_per_allocation_without_channel": 1024 * (after_allocate["VmRSS"] - before["VmRSS"])
            / max(1, len(allocated)),
            "open_fds": len(os.listdir(f"/proc/{server.pid}/fd")),
        }
        log(f"  {server.name:6} {len(bound)} allocations: RSS {before['VmRSS']} -> {after['VmRSS']} KiB, "
            f"{result['bytes_per_allocation']:.0f} B/allocation")
        return result
    finally:
        server.stop()
        for session in opened:
            session.sock.close()


# -- ratios --------------------------------------------------------------------------------------


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for config in results["configs"]:
        c, o = config["coturn"], config["ours"]
        lat = {(r["server"], r["label"]): r for r in config["latency"]}
        common_c, common_o = lat.get(("coturn", "common50")), lat.get(("ours", "common50"))
        own_c, own_o = lat.get(("coturn", "own50")), lat.get(("ours", "own50"))

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a and b else None

        rows.append({
            "sessions": config["sessions"], "size": config["size"],
            "max_pps": {"coturn": c.get("max_relayed_pps"), "ours": o.get("max_relayed_pps"),
                        "ratio": ratio(o.get("max_relayed_pps"), c.get("max_relayed_pps")),
                        "limited_by": {"coturn": c.get("limited_by"), "ours": o.get("limited_by")}},
            "per_core_pps": {"coturn": c.get("per_core_relayed_pps"), "ours": o.get("per_core_relayed_pps"),
                             "ratio": ratio(o.get("per_core_relayed_pps"), c.get("per_core_relayed_pps"))},
            "cpu_us_per_packet_same_load": {
                "rate_messages_per_s": common_c["target_rate"] if common_c else None,
                "coturn": common_c and common_c["cpu_us_per_packet"],
                "ours": common_o and common_o["cpu_us_per_packet"],
                "ratio": ratio(common_o and common_o["cpu_us_per_packet"], common_c and common_c["cpu_us_per_packet"]),
            },
            "cpu_us_per_packet_at_max": {"coturn": c.get("cpu_us_per_packet_at_max"),
                                         "ours": o.get("cpu_us_per_packet_at_max"),
                                         "ratio": ratio(o.get("cpu_us_per_packet_at_max"),
                                                        c.get("cpu_us_per_packet_at_max"))},
            "p99_rtt_us_own50": {"coturn": own_c and own_c["rtt_us"]["p99"], "ours": own_o and own_o["rtt_us"]["p99"],
                                 "ratio": ratio(own_o and own_o["rtt_us"]["p99"], own_c and own_c["rtt_us"]["p99"])},
            "p99_rtt_us_same_load": {"coturn": common_c and common_c["rtt_us"]["p99"],
                                     "ours": common_o and common_o["rtt_us"]["p99"],
                                     "ratio": ratio(common_o and common_o["rtt_us"]["p99"],
                                                    common_c and common_c["rtt_us"]["p99"])},
        })
    per_core = [r["per_core_pps"]["ratio"] for r in rows if r["per_core_pps"]["ratio"]]
    cpu = [r["cpu_us_per_packet_same_load"]["ratio"] for r in rows if r["cpu_us_per_packet_same_load"]["ratio"]]
    measured = [r["max_pps"]["ratio"] for r in rows if r["max_pps"]["ratio"]]
    memory = results.get("memory", {})
    mem_ratio = None
    if memory.get("coturn") and memory.get("ours"):
        mem_ratio = memory["ours"]["bytes_per_allocation"] / memory["coturn"]["bytes_per_allocation"]
    goals = {
        "per_core_pps_ratio_min": min(per_core) if per_core else None,
        "per_core_pps_ratio_geomean": geomean(per_core),
        "measured_max_pps_ratio_min": min(measured) if measured else None,
        "measured_max_pps_ratio_geomean": geomean(measured),
        "cpu_per_packet_ratio_max": max(cpu) if cpu else None,
        "cpu_per_packet_ratio_geomean": geomean(cpu),
        "memory_per_allocation_ratio": mem_ratio,
    }
    runs = [p for c in results["configs"] for s in ("coturn", "ours") for p in c.get(s, {}).get("probes", [])]
    runs += [r for c in results["configs"] for r in c["latency"]] + results["uclient"]
    for name in ("coturn", "ours"):
        shares = [c[name]["generator_cpu_fraction_at_max"] for c in results["configs"]
                  if c.get(name, {}).get("generator_cpu_fraction_at_max") is not None]
        goals[f"generator_cpu_fraction_at_{name}_max"] = [min(shares), max(shares)] if shares else None
    goals["runs"] = len(runs)
    goals["tainted_runs"] = sum(1 for r in runs if r.get("tainted"))
    goals["pps_goal_met"] = bool(per_core) and min(per_core) >= 0.8
    goals["cpu_goal_met"] = bool(cpu) and max(cpu) <= 1.25
    return {"rows": rows, "goals": goals}


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs, 50 sessions only, 2,000 allocations (~3 min)")
    p.add_argument("--sessions", type=int, nargs="+", default=[10, 50, 200])
    p.add_argument("--sizes", type=int, nargs="+", default=[180, 1000])
    p.add_argument("--uclient-intervals", type=int, nargs="+", default=[20, 0], help="-z values (ms)")
    p.add_argument("--uclient-paced-seconds", type=float, default=6.0, help="sending time per session at -z > 0")
    p.add_argument("--uclient-unpaced-messages", type=int, default=200_000, help="messages per -z 0 run, all sessions")
    p.add_argument("--probe-seconds", type=float, default=2.0)
    p.add_argument("--closed-loop-seconds", type=float, default=1.0)
    p.add_argument("--max-probes", type=int, default=6)
    p.add_argument("--latency-seconds", type=float, default=3.0)
    p.add_argument("--allocations", type=int, default=10_000)
    p.add_argument("--idle-seconds", type=float, default=3.0, help="measure both servers' CPU use at rest")
    p.add_argument("--retries", type=int, default=2, help="repeats of a run tainted by other load on the cores")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="longest wait (s) for other processes to quiet down before each measured run; on a machine "
                        "that stays busy every run waits this long")
    p.add_argument("--skip", nargs="*", default=[], choices=["uclient", "pump", "memory"])
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--generator-core", type=int, default=1)
    p.add_argument("--ours-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment for our relay (e.g. to compare event loops)")
    p.add_argument("--ours-loop", choices=["installed", "asyncio"], default="installed",
                   help="installed: uvloop if the venv has it (what `kijkmee relay` does); asyncio: never uvloop")
    p.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the .md (and summary) of a results file")
    p.add_argument("--out", type=Path, default=RESULTS / "relay_vs_coturn.json")
    args = p.parse_args(argv)
    if args.quick:
        args.sessions = [50] if args.sessions == [10, 50, 200] else args.sessions
        args.uclient_paced_seconds = 3.0
        args.uclient_unpaced_messages = 60_000
        args.probe_seconds = 1.0
        args.closed_loop_seconds = 0.5
        args.max_probes = 4
        args.latency_seconds = 1.5
        args.allocations = 2_000 if args.allocations == 10_000 else args.allocations
    return args


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.render is not None:  # rewrite the summary and the .md of an earlier run
        results = json.loads(opts.render.read_text())
        results["summary"] = summarise(results)
        opts.render.write_text(json.dumps(results, indent=1, default=str) + "\n")
        opts.render.with_suffix(".md").write_text(write_markdown(results))
        return 0
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        print("needs 2 cores", file=sys.stderr)
        return 2
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer", "gcc", "taskset"):
        if shutil.which(tool) is None:
            print(f"missing {tool} (Debian packages coturn, gcc, util-linux)", file=sys.stderr)
            return 2
    os.sched_setaffinity(0, {opts.generator_core})
    srv.QUIET_WAIT[0] = opts.quiet_wait
    GENERATOR_CORE[0] = opts.generator_core
    srv.raise_nofile()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    secret_file = work / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    pump = build_pump(work)
    extra_env = dict(item.split("=", 1) for item in opts.ours_env)

    def make(name: str) -> srv.Server:
        if name == "coturn":
            return srv.coturn(PORTS["coturn"], RELAY_PORTS["coturn"], SECRET, opts.server_core, work / "coturn.log")
        return srv.ours(PORTS["ours"], RELAY_PORTS["ours"], secret_file, PORTS["metrics"], opts.server_core,
                        work / "ours.log", extra_env, opts.ours_loop)

    results: dict[str, Any] = {
        "bench": "relay_vs_coturn", "machine": machine_info(), "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "definitions": {
            "relayed_packet": "one datagram the server forwarded; an echoed message counts 2 (client->peer, "
                              "peer->client). pump: peer_rx + received (exact); uclient: 2 x received echoes",
            "cpu_us_per_packet": "server process utime+stime (/proc/PID/stat, all threads) / relayed packets",
            "runtime_us_per_packet": "same with /proc/PID/task/*/schedstat run time (ns resolution)",
            "core_us_per_packet": "non-idle time of the server core from /proc/stat (incl. softirq) / relayed "
                                  "packets; tick-sampled on this VM and sometimes far off: recorded, not used",
            "stale": "pump: echoes of an earlier run on the same sessions (a slow server's backlog); relayed, "
                     "not counted as received",
            "tainted": "other processes used > 10 % of a core during the run (after up to --retries repeats)",
            "per_core_relayed_pps": "relayed packets/s at the max rate / server CPU fraction at that rate",
            "loss": "(sent - echoes received) / sent",
        },
        "uclient": [], "configs": [], "memory": {},
    }
    servers = {"coturn": make("coturn"), "ours": make("ours")}
    results["commands"] = {
        "coturn": " ".join(servers["coturn"].command), "ours": " ".join(servers["ours"].command),
        "peer": f"taskset -c {opts.generator_core} turnutils_peer -p {PORTS['peer']} -L 127.0.0.1",
        "pump": f"gcc -O2 -o pump bench/relay_vs_coturn/pump.c; pump PEER_FD SIZE RATE WINDOW SECONDS DRAIN WARMUP "
                f"{hex(turnctl.CHANNEL)} FD... (descriptors set up by bench/relay_vs_coturn/turnctl.py)",
        "rerun": "make bench-relay  (or: .venv/bin/python bench/relay_vs_coturn/run.py [--quick])",
    }
    peer: subprocess.Popen[bytes] | None = None
    interrupted = False

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        def restart(*which: srv.Server) -> None:
            for server in which:
                if server.proc is not None:
                    BENCH_PIDS.discard(server.pid)
                    server.stop()
                server.start()
                BENCH_PIDS.add(server.pid)

        restart(*servers.values())
        log(f"servers up: coturn pid {servers['coturn'].pid}, ours pid {servers['ours'].pid} (core {opts.server_core})")
        srv.wait_quiet({os.getpid(), *BENCH_PIDS})
        idle0 = {name: srv.proc_runtime(server.pid) for name, server in servers.items()}
        time.sleep(opts.idle_seconds)
        results["idle_cpu_fraction"] = {name: (srv.proc_runtime(server.pid) - idle0[name]) / opts.idle_seconds
                                        for name, server in servers.items()}
        log(f"idle CPU: {results['idle_cpu_fraction']}")
        flip = 0

        def order() -> list[srv.Server]:
            nonlocal flip
            flip += 1
            names = ["coturn", "ours"] if flip % 2 else ["ours", "coturn"]
            return [servers[n] for n in names]

        if "uclient" not in opts.skip:
            peer = srv.echo_peer(PORTS["peer"], opts.generator_core, work / "peer.log")
            BENCH_PIDS.add(peer.pid)
            for sessions in opts.sessions:
                for size in opts.sizes:
                    for interval in opts.uclient_intervals:
                        if interval > 0:
                            messages = max(10, int(opts.uclient_paced_seconds * 1000 / interval))
                        else:
                            messages = max(100, opts.uclient_unpaced_messages // sessions)
                        for server in order():
                            timeout = 60 + sessions * 0.15 + (messages * interval / 1000) + 30
                            run = run_uclient(server, peer, sessions, size, interval, messages, opts.generator_core,
                                              timeout)
                            results["uclient"].append(run)
                            if run.get("stopped_early") or run.get("error") or run.get("timeout"):
                                restart(server)  # its sessions were not released
                            log(f"uclient {server.name:6} m={sessions:3} l={size:4} z={interval:2}: "
                                f"loss {run.get('loss', float('nan')):.4%}  "
                                f"{run.get('relayed_pps_mean') or 0:8.0f} pkt/s  "
                                f"{run.get('cpu_us_per_packet') or 0:.2f} us/pkt  {run.get('error', '')}")
            srv.kill_group(peer)
            peer = None

        if "pump" not in opts.skip:
            restart(*servers.values())  # no allocations left over from uclient
            for sessions in opts.sessions:
                for size in opts.sizes:
                    log(f"rate search: {sessions} sessions, {size} B")
                    config: dict[str, Any] = {"sessions": sessions, "size": size, "latency": []}
                    ordered = order()
                    for server in ordered:
                        config[server.name] = rate_search(pump, server, sessions, size, opts)
                    maxima = {s.name: config[s.name].get("max_messages_per_s") for s in ordered}
                    if all(maxima.values()):
                        common = 0.5 * min(maxima.values())  # type: ignore[type-var]
                        for server in ordered:
                            own = 0.5 * maxima[server.name]  # type: ignore[operator]
                            if abs(own - common) / common < 0.02:
                                run = latency_run(pump, server, sessions, size, common, "own50", opts)
                                config["latency"].append(run)
                                config["latency"].append(dict(run, label="common50"))
                            else:
                                config["latency"].append(latency_run(pump, server, sessions, size, own, "own50", opts))
                                config["latency"].append(
                                    latency_run(pump, server, sessions, size, common, "common50", opts))
                    results["configs"].append(config)

        with contextlib.suppress(Exception):
            with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['metrics']}/metrics", timeout=3) as response:
                text = response.read().decode()
            results["ours_metrics_drops"] = [line for line in text.splitlines()
                                            if "drop" in line and not line.startswith("#") and not line.endswith(" 0")
                                            and not line.endswith(" 0.0")]
        for server in servers.values():
            server.stop()

        if "memory" not in opts.skip:
            log(f"memory: {opts.allocations} allocations each, fresh servers")
            holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            holder.bind(("127.0.0.1", 0))
            try:
                for name in ("coturn", "ours"):
                    results["memory"][name] = memory_test(make(name), opts.allocations, holder.getsockname())
            finally:
                holder.close()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up")
    except Exception:  # keep what was measured; say what broke
        interrupted = True
        results["error"] = traceback.format_exc()
        log(f"failed: cleaning up\n{results['error']}")
    finally:
        srv.kill_group(peer)
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["summary"] = summarise(results)
    results["elapsed_seconds"] = time.monotonic() - began
    results["interrupted"] = interrupted
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = opts.out.with_suffix(".md")
    md.write_text(write_markdown(results))
    log(f"wrote {opts.out} and {md} in {results['elapsed_seconds']:.0f} s")
    print(md.read_text())
    return 1 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
