"""Start, measure and stop the two servers under test (and coturn's echo peer), pinned to one core."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.relay_vs_coturn.turnctl import binding_ok

ROOT = Path(__file__).resolve().parents[2]
KIJKMEE = ROOT / ".venv" / "bin" / "kijkmee"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOFILE = 65536


def raise_nofile() -> None:
    """In a child before exec (and in the driver): room for 10,000+ sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(NOFILE, soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))


def proc_cpu(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_runtime(pid: int) -> float:
    """CPU time of all threads in ns resolution (sum of /proc/PID/task/*/schedstat), seconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def rss_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def core_busy(core: int) -> float:
    """Seconds core ``core`` was not idle (user+nice+system+irq+softirq; not steal) from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            v = [int(x) for x in line.split()[1:]]
            return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK
    raise RuntimeError(f"cpu{core} not in /proc/stat")


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    core: int
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: list[str] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def command(self) -> list[str]:
        return ["taskset", "-c", str(self.core), *self.argv]

    def start(self, timeout: float = 15.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=raise_nofile, start_new_session=True, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            if binding_ok(self.address):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer a STUN Binding request within {timeout} s; see {self.log}")

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def stop(self) -> None:
        """SIGTERM (our relay drains on the first one), again, then SIGKILL; the whole process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 0.3), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group
        proc.wait()


def coturn(port: int, ports: tuple[int, int], secret: str, core: int, log: Path) -> Server:
    argv = [
        "turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
        f"--min-port={ports[0]}", f"--max-port={ports[1]}", "--use-auth-secret", f"--static-auth-secret={secret}",
        "--realm=kijkmee", "--relay-threads=1", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
        "--no-multicast-peers", "--log-file=/dev/null", "--simple-log", "--no-stdout-log",
    ]
    return Server("coturn", argv, port, core, log)


NO_UVLOOP = "import sys; sys.modules['uvloop'] = None; from kijkmee.cli import main; sys.exit(main(sys.argv[1:]))"
"""`kijkmee` as if uvloop were not installed (to measure asyncio's own loop on a machine that has it)."""


def ours(port: int, ports: tuple[int, int], secret_file: Path, metrics_port: int, core: int, log: Path,
         extra_env: dict[str, str] | None = None, event_loop: str = "installed") -> Server:
    program = [str(KIJKMEE)] if event_loop == "installed" else [str(KIJKMEE.parent / "python"), "-c", NO_UVLOOP]
    argv = [
        *program, "relay", "--listen", f"127.0.0.1:{port}", "--auth-secret-file", str(secret_file),
        "--allow-peer", "127.0.0.1/32", "--allow-unencrypted", "--metrics", f"127.0.0.1:{metrics_port}",
        "--ports", f"{ports[0]}-{ports[1]}", "--max-allocations", "20000", "--max-allocations-per-user", "20000",
        "--bandwidth-limit", "1000000000", "--log-level", "warning",
    ]
    env = dict(os.environ, **(extra_env or {}))
    return Server("ours", argv, port, core, log, env=env)


def echo_peer(port: int, core: int, log: Path) -> subprocess.Popen[bytes]:
    """coturn's turnutils_peer: the UDP echo peer turnutils_uclient expects."""
    with log.open("ab") as out:
        proc = subprocess.Popen(["taskset", "-c", str(core), "turnutils_peer", "-p", str(port), "-L", "127.0.0.1"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.3)
    if proc.poll() is not None:
        raise RuntimeError(f"turnutils_peer exited with {proc.returncode}; see {log}")
    return proc


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2.0)
            return


PF_KTHREAD = 0x00200000


def process_cpu_snapshot() -> tuple[dict[int, float], float]:
    """(user-space processes' utime+stime by pid, ksoftirqd time), seconds, from /proc/*/stat."""
    cpu: dict[int, float] = {}
    softirq = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if int(fields[6]) & PF_KTHREAD:
            if name.startswith("ksoftirqd/"):
                softirq += ticks
            continue
        cpu[int(entry.name)] = ticks
    return cpu, softirq


def foreign_cpu(before: tuple[dict[int, float], float], after: tuple[dict[int, float], float],
                exclude: set[int]) -> tuple[float, float]:
    """(CPU seconds other processes used between two snapshots, ksoftirqd seconds)."""
    total = 0.0
    for pid, value in after[0].items():
        if pid not in exclude:
            total += max(0.0, value - before[0].get(pid, 0.0))
    return total, after[1] - before[1]


QUIET_WAIT = [30.0]
"""Longest wait for other processes to quiet down before a measured run (run.py --quiet-wait)."""


def wait_quiet(exclude: set[int], limit: float = 0.05, window: float = 0.5, max_wait: float | None = None) -> float:
    """Wait until other processes use less than ``limit`` cores over ``window`` s (at most ``max_wait`` s);
    returns the seconds waited."""
    start = time.monotonic()
    max_wait = QUIET_WAIT[0] if max_wait is None else max_wait
    while time.monotonic() - start < max_wait:
        first = process_cpu_snapshot()
        time.sleep(window)
        used, _ = foreign_cpu(first, process_cpu_snapshot(), exclude)
        if used / window < limit:
            break
    return time.monotonic() - start


def settle(pid: int, limit: float = 0.03, window: float = 0.2, max_wait: float = 10.0) -> float:
    """Wait until process ``pid`` uses less than ``limit`` of a core (it has worked off any backlog of an
    overloaded run); returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        before = proc_runtime(pid)
        time.sleep(window)
        if (proc_runtime(pid) - before) / window < limit:
            break
    return time.monotonic() - start
