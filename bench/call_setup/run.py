"""Call set-up time: page load → first decoded remote video frame, for every participant of a 3-way call.

Three Chromium pages open the same call link at once and join as soon as the join button is enabled
(no human think time). Each page records, against its own navigation start, the moment its
RTCPeerConnections have decoded a first video frame from both other people. A run's figure is the
slowest of the three. Run inside a loopback-only network namespace: `make bench-call-setup`.

Certificates: by default the server and the bare call use a certificate the browsers trust (a test CA
made for the run, trusted through an NSS database under the browsers' own HOME: tests/e2e/ca.py), as
every deployment's certificate is trusted. `--certificate dev` measures instead with `kijkmee serve`'s
self-signed development certificate and the browsers told to ignore its errors: then every new TLS
connection stops twice for Chromium's certificate-error handler (seen in a net log: up to ~115 ms on
this busy machine), and the call page opens up to six connections for its 12 scripts and styles where
the bare page opens one (each also opens one for its WebSocket), so that set-up measures the test
accommodation as much as kijkmee.

Each run gets fresh browser contexts (no cache, no cookies: a first visit). Opening one is opening a
browser window, and Chromium then starts that window's own pages (its omnibox pop-up, a WebUI of some
2,500 resources, about 0.3 s of CPU per browser in a trace); the bench waits `--settle` seconds for
that before it opens the link, as a person's browser is open before they click one. Without the wait
(`--settle 0`) that start-up competes with the call for the two cores and adds ~0.3-0.45 s here.

Side by side, in the same browsers and interleaved run for run, the same probe measures a bare
three-way WebRTC call (bare.py: one page, one WebSocket, host candidates, nothing else). Its time is
this machine's floor for a call set-up; the ratio kijkmee / bare says what kijkmee adds, whatever the
machine. Both go to bench/results/call_setup.{json,md}.

`--compare DIR` measures another checkout of kijkmee in the same runs, interleaved with this one and the
bare call (e.g. a branch in a `git worktree`, with `npm ci` run in its client_web): on this machine the
figure drifts by a sixth within an hour, so a change is judged against main side by side, never against
an earlier run. Even so, the same code measured twice differed by up to ~6 % over 8-16 runs on one
machine, and its ratio to the bare call ranged from 1.37 to 1.86 between run sets of 10-16 on another.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bare import BareServer, tls_context  # noqa: E402  (bench/call_setup/bare.py, beside this file)

from kijkmee.tls import TlsPolicy  # noqa: E402
from tests.conftest import in_private_netns  # noqa: E402
from tests.e2e.ca import make_pki  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, start_serve, stop_serve  # noqa: E402
from tests.integration.sio_helpers import create_room  # noqa: E402

# Runs before the page's own scripts: clicks "Join" the moment it is enabled (a person who already
# decided; Playwright's own click would add its actionability checks to the figure), then polls
# getStats until two peers have each decoded a video frame. Records a few steps on the way.
FIRST_FRAMES_PROBE = """
(() => {
  const marks = window.__marks = {};
  const poll = async () => {
    const join = document.getElementById('join');
    if (!marks.joinClicked && join && !join.disabled && window.kijkmee) {
      marks.joinClicked = performance.now();
      join.click();
    }
    const k = window.kijkmee;
    if (k && k.state === 'in-call' && !marks.inCall) marks.inCall = performance.now();
    if (k && k.pcs && k.pcs.size === 2) {
      let ready = 0;
      for (const pc of k.pcs.values()) {
        const stats = await pc.getStats();
        let frames = 0;
        stats.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded || 0; });
        if (frames > 0) ready += 1;
      }
      if (ready === 2) { window.__firstFramesMs = performance.now(); return; }
    }
    setTimeout(poll, 10);
  };
  poll();
})();
"""

# Also before the page's own scripts, after FIRST_FRAMES_PROBE: the steps every call takes, whichever
# code takes them, timed in the same `__marks`. The first getUserMedia (asked, answered), the first
# WebSocket (created, open), the join going out on it and the first message back after that (the
# answer), and the first offer or answer from another person.
STEPS_PROBE = """
(() => {
  const marks = window.__marks;
  const now = () => performance.now();
  const media = navigator.mediaDevices;
  if (media) {
    const ask = media.getUserMedia.bind(media);
    media.getUserMedia = (constraints) => {
      marks.cameraAsked ??= now();
      return ask(constraints).then((stream) => { marks.cameraOn ??= now(); return stream; });
    };
  }
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      if (marks.socketCreated !== undefined) return;
      marks.socketCreated = now();
      this.addEventListener('open', () => { marks.socketOpen ??= now(); });
      this.addEventListener('message', ({ data }) => {
        if (marks.joinSent !== undefined) marks.joinAnswered ??= now();
        if (/"(offer|answer)"/.test(String(data))) marks.firstSdp ??= now();
      });
      const send = this.send.bind(this);
      this.send = (data) => {
        if (String(data).includes('"join"')) marks.joinSent ??= now();
        return send(data);
      };
    }
  };
})();
"""

# What the bench reports of STEPS_PROBE and FIRST_FRAMES_PROBE's marks, in order (see report()).
STEPS = {
    "subresources": "the page's scripts and styles all in",
    "cameraAsked": "camera and microphone asked for",
    "cameraOn": "camera and microphone on",
    "socketCreated": "WebSocket created",
    "socketOpen": "WebSocket open",
    "ready": "Join usable (clicked)",
    "joinSent": "join sent",
    "joinAnswered": "join answered",
    "inCall": "in the call (page state)",
    "firstSdp": "first offer or answer from another person",
    "frames": "first video frame from both others",
}


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every core, every process) since boot, /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds each process has used so far, with its kind: Chromium's browser process, renderers,
    GPU process and services (network, audio, video capture, ...), kijkmee's server, this bench process
    (which serves the bare call too) and "other" (Playwright's driver and anything else)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if "chromium" in command:
            service = re.search(r"--utility-sub-type=(\w+)", command)
            kind = re.search(r"--type=(\S+)", command)
            name = f"chromium {service.group(1) if service else kind.group(1) if kind else 'browser'}"
        elif " -m kijkmee serve " in command:
            name = "kijkmee server"
        elif int(entry.name) == os.getpid():
            name = "bench (and the bare call's server)"
        else:
            name = "other"
        found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


def cpu_between(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per kind of process from `before` to `after` (processes started meanwhile count whole)."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        earlier = before.get(pid)
        used = seconds - (earlier[1] if earlier and earlier[0] == name else 0.0)
        spent[name] = spent.get(name, 0.0) + used
    return spent


async def one_run(browsers: list[Browser], link: str, settle: float, trusted: bool) -> list[dict[str, Any]]:
    """Three people open `link` at once; each one's marks in seconds since its navigation start, and
    (in the first person's) `cpu`: the machine's CPU seconds from the first navigation until everyone
    saw both others (the browsers, the server and anything else running), and `cpu_by`: the same per
    kind of process (cpu_by_process)."""
    contexts = [await browsers[i % len(browsers)].new_context(ignore_https_errors=not trusted) for i in range(3)]
    try:
        pages = [await context.new_page() for context in contexts]
        for page in pages:
            await page.add_init_script(FIRST_FRAMES_PROBE)
            await page.add_init_script(STEPS_PROBE)
        await asyncio.sleep(settle)  # the new windows finish starting (see the top of this file)

        async def attend(page: Page) -> dict[str, float]:
            await page.goto(link)
            # Look every 100 ms: the page records the moment itself, and Playwright's default
            # (requestAnimationFrame) would make all three pages draw 60 frames a second meanwhile.
            await page.wait_for_function("() => window.__firstFramesMs !== undefined", timeout=30_000,
                                         polling=100)
            # subresources: the last script or style requested before "Join" was clicked has arrived.
            marks = await page.evaluate(
                """() => {
                  const {joinClicked, ...steps} = window.__marks;
                  const loads = performance.getEntriesByType('resource').filter((entry) =>
                    entry.startTime < joinClicked && ['script', 'link', 'css'].includes(entry.initiatorType));
                  const subresources = loads.length ? Math.max(...loads.map((entry) => entry.responseEnd)) : null;
                  return {...steps, subresources, ready: joinClicked, frames: window.__firstFramesMs};
                }"""
            )
            return {name: float(value) / 1000 for name, value in marks.items() if value is not None}

        busy, processes = machine_busy_seconds(), cpu_by_process()
        people: list[dict[str, Any]] = list(await asyncio.gather(*(attend(page) for page in pages)))
        people[0]["cpu"] = machine_busy_seconds() - busy
        people[0]["cpu_by"] = cpu_between(processes, cpu_by_process())
        return people
    finally:
        for context in contexts:
            await context.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(runs: list[list[dict[str, Any]]]) -> dict[str, object]:
    """Median and p90 of the slowest person per run, every run's figures, the phase medians and the
    machine's CPU per set-up (in all and by kind of process)."""
    slowest = [max(person["frames"] for person in run) for run in runs]
    people = [person for run in runs for person in run]
    kinds = sorted({name for run in runs for name in run[0]["cpu_by"]})
    return {
        "median_s": round(statistics.median(slowest), 3),
        "p90_s": round(percentile(slowest, 0.9), 3),
        "per_run_per_person_s": [[round(person["frames"], 3) for person in run] for run in runs],
        "machine_cpu_s_median": round(statistics.median(run[0]["cpu"] for run in runs), 2),
        "steps_ms_median": {step: round(1000 * statistics.median(p[step] for p in people if step in p))
                            for step in STEPS if any(step in p for p in people)},
        "cpu_s_median_by_process": {name: round(statistics.median(run[0]["cpu_by"].get(name, 0.0) for run in runs), 3)
                                    for name in kinds},
        "phase_medians_s": {
            "page_load_to_join_ready": round(statistics.median(p["ready"] for p in people), 3),
            "join_to_admitted": round(statistics.median(p["inCall"] - p["ready"] for p in people), 3),
            "admitted_to_first_frames": round(statistics.median(p["frames"] - p["inCall"] for p in people), 3),
        },
    }


def report(result: dict[str, Any]) -> str:
    ours, bare = result["kijkmee"], result["bare"]
    machine = result["machine"]

    def row(name: str, figures: dict[str, Any]) -> str:
        phases = figures["phase_medians_s"]
        return (f"| {name} | {figures['median_s']:.3f} s | {figures['p90_s']:.3f} s "
                f"| {phases['page_load_to_join_ready']:.3f} s | {phases['join_to_admitted']:.3f} s "
                f"| {phases['admitted_to_first_frames']:.3f} s | {figures['machine_cpu_s_median']:.2f} s |\n")

    calls = [("kijkmee", ours), *((f"`--compare {name}`", figures) for name, figures in result["compare"].items()),
             ("bare", bare)]
    kinds = sorted({name for _, figures in calls for name in figures["cpu_s_median_by_process"]},
                   key=lambda name: -ours["cpu_s_median_by_process"].get(name, 0.0))
    by_process = (
        "| CPU per set-up, by process (median) | " + " | ".join(call for call, _ in calls) + " |\n"
        + "|---" * (len(calls) + 1) + "|\n"
        + "".join(f"| {name} | " + " | ".join(f"{figures['cpu_s_median_by_process'].get(name, 0.0):.2f} s"
                                            for _, figures in calls) + " |\n" for name in kinds)
    )
    steps = (
        "| step (ms since navigation start, median over every person) | " + " | ".join(call for call, _ in calls)
        + " |\n" + "|---" * (len(calls) + 1) + "|\n"
        + "".join(f"| {label} | " + " | ".join(str(figures["steps_ms_median"].get(step, "—")) for _, figures in calls)
                  + " |\n" for step, label in STEPS.items())
    )
    return (
        f"# call_setup\n\n{result['what']}, {result['runs']} runs of a 3-way call on loopback "
        f"({machine['chromium']}, {machine['cpus']} cores), measured {result['measured_at']}.\n\n"
        f"| goal (kijkmee median) | kijkmee median | met | bare WebRTC median (same runs) "
        f"| kijkmee / bare | kijkmee - bare |\n|---|---|---|---|---|---|\n"
        f"| ≤ {result['goal_median_s']:.3f} s | {ours['median_s']:.3f} s | {'yes' if result['goal_met'] else 'no'} "
        f"| {bare['median_s']:.3f} s | {result['ratio_to_bare']:.2f} | {result['overhead_s']:+.3f} s |\n\n"
        "| call | median | p90 | page load → join ready | join → admitted | admitted → first frames "
        "| machine CPU per set-up |\n|---|---|---|---|---|---|---|\n"
        + row("kijkmee", ours)
        + "".join(row(f"`--compare {name}` (kijkmee's median times {figures['ratio_to_kijkmee']:.3f})", figures)
                  for name, figures in result["compare"].items())
        + row("bare WebRTC (bare.py)", bare) + "\n"
        "Each figure: from a page's navigation start to the moment it has decoded a first video frame from "
        "both others, the slowest of the three people; the phases are medians over every person and run. "
        "*Machine CPU per set-up*: the CPU time every process on the machine spent from the first "
        "navigation until all three saw both others (median over the runs): the cores are saturated while "
        "a call starts, so this work, more than any one step, sets the time. "
        "*Bare WebRTC* is the floor on this machine: one page, one WebSocket, host candidates only, the same "
        "camera constraints and the same probe (bench/call_setup/bare.py); kijkmee adds TLS-checked "
        "signaling with a store, the relay's candidates, translations, the pre-join screen and the in-call "
        "features. Runs alternate between the two. One Chromium per person (three browsers and six "
        "software VP8 encoders share the machine's cores); fresh browser contexts each run, the link "
        f"opened {result['settle_s']:g} s after their windows (`--settle`); "
        + ("a certificate the browsers trust (a test CA), as in a deployment; "
           if result["certificate"] == "trusted" else
           "the self-signed development certificate with the browsers ignoring its errors (`--certificate dev`); ")
        + "1-minute load average "
        f"{machine['load_average_1min_before']} before the bench started.\n\n"
        + steps + "\n"
        "Each step is timed by the page itself (bench/call_setup/run.py STEPS_PROBE): the first getUserMedia, "
        "the first WebSocket, the join on it and the first message back, the first offer or answer received. "
        "Medians over all people and runs, so the rows need not add up.\n\n"
        + by_process + "\n"
        "Chromium's processes of all three browsers, by kind (`--type`, or the service a utility process "
        "runs); the bare call's server runs in the bench process. Much of this work goes on for as long "
        "as a set-up lasts (camera capture, audio processing, drawing the videos), so a longer set-up "
        "costs more CPU as well as being caused by it.\n"
    )


def compared(figures: dict[str, object], ours_median: float, floor_median: float) -> dict[str, object]:
    """A compared checkout's summary with its median as a ratio to the bare call's and to this checkout's."""
    median = float(figures["median_s"])  # type: ignore[arg-type]
    return {**figures, "ratio_to_bare": round(median / floor_median, 3),
            "ratio_to_kijkmee": round(median / ours_median, 3)}


def checkout_problem(checkout: Path) -> str | None:
    """Why `checkout` can't be measured with this Python, or None: its own kijkmee and client files must
    be what `python -m kijkmee` picks up there."""
    if not (checkout / "kijkmee" / "__main__.py").is_file():
        return "not a kijkmee checkout (no kijkmee/__main__.py)"
    if not (checkout / "client_web" / "node_modules" / "socket.io-client").is_dir():
        return "its client_web has no node_modules: run `npm ci` in it first"
    probe = "import kijkmee, signaling; print(kijkmee.__file__); print(signaling.__file__)"
    found = subprocess.run([sys.executable, "-c", probe], cwd=checkout, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(checkout)}, check=False)
    paths = [Path(line).resolve() for line in found.stdout.split()]
    if found.returncode != 0 or len(paths) != 2 or not all(path.is_relative_to(checkout) for path in paths):
        return f"its code is not what Python imports there ({found.stdout.strip() or found.stderr.strip()[-200:]})"
    return None


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="measured runs of each call (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each first (default 1)")
    parser.add_argument("--one-browser", action="store_true", help="all three people in one Chromium")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between opening the browser windows and opening the link (default 1)")
    parser.add_argument("--certificate", choices=("trusted", "dev"), default="trusted",
                        help="trusted: a test CA the browsers trust, as in a deployment (default); dev: the "
                             "self-signed development certificate, its errors ignored (see above)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `kijkmee serve`, e.g. --serve-arg=--no-embedded-relay (repeatable)")
    parser.add_argument("--compare", action="append", default=[], type=Path, metavar="DIR",
                        help="another kijkmee checkout to measure in the same runs (repeatable); its code and "
                             "client files are served with this Python (see above)")
    args = parser.parse_args()
    for checkout in args.compare:
        problem = checkout_problem(checkout.resolve())
        if problem:
            print(f"--compare {checkout}: {problem}", file=sys.stderr)
            return 2
    if args.certificate == "trusted" and shutil.which("certutil") is None:
        print("--certificate trusted needs certutil (Debian's libnss3-tools; `make setup-test` installs it), "
              "or measure with --certificate dev", file=sys.stderr)
        return 2
    if not in_private_netns():
        print("run inside a loopback-only network namespace: make bench-call-setup", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]  # other work on the machine: the bench shares its two cores
    work = Path(tempfile.mkdtemp(prefix="kijkmee-bench-"))
    trusted = args.certificate == "trusted"
    serve_args = list(args.serve_arg)
    launch_env: dict[str, Any] = {}
    if trusted:
        pki = make_pki(work / "pki")
        serve_args += ["--cert-file", str(pki.cert_file), "--key-file", str(pki.key_file)]
        bare_context = TlsPolicy().server_context(pki.cert_file, pki.key_file)
        launch_env = {"env": pki.browser_env}
    else:
        bare_context = tls_context(work / "bare-cert")
    server = start_serve(work / "data", *serve_args, checkout=ROOT)  # this checkout, wherever the bench runs from
    others = {str(checkout.resolve()): start_serve(work / f"compare-{index}", *serve_args,
                                                   checkout=checkout.resolve())
              for index, checkout in enumerate(args.compare)}
    bare = BareServer(bare_context)
    await bare.start()
    measured: dict[str, list[list[dict[str, Any]]]] = {"kijkmee": [], **{name: [] for name in others}, "bare": []}
    try:
        async with async_playwright() as playwright:
            # One browser per person, as three people on three devices have: in one browser, the three
            # pages share Chromium's one fake capture device, whose restarts stall everyone's video.
            browsers = [await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, **launch_env)
                        for _ in range(1 if args.one_browser else 3)]

            async def kijkmee_link() -> str:
                return f"{server.url}/r/{await create_room(server.url)}"

            async def bare_link() -> str:
                return bare.call_url()

            def other_link(url: str) -> Callable[[], Awaitable[str]]:
                async def link() -> str:
                    return f"{url}/r/{await create_room(url)}"
                return link

            links = {"kijkmee": kijkmee_link, **{name: other_link(other.url) for name, other in others.items()},
                     "bare": bare_link}
            for _ in range(args.warmup):
                for link in links.values():
                    await one_run(browsers, await link(), args.settle, trusted)
            for index in range(args.runs):
                for name, link in links.items():
                    people = await one_run(browsers, await link(), args.settle, trusted)
                    measured[name].append(people)
                    per_person = [person["frames"] for person in people]
                    print(f"run {index + 1} {name}: slowest {max(per_person):.3f} s  (each: "
                          + ", ".join(f"{t:.3f}" for t in per_person) + f"; machine CPU {people[0]['cpu']:.2f} s)")
            for browser in browsers:
                await browser.close()
    finally:
        await bare.stop()
        stop_serve(server)
        for other in others.values():
            stop_serve(other)
    ours, floor = summary(measured["kijkmee"]), summary(measured["bare"])
    ours_median, floor_median = float(ours["median_s"]), float(floor["median_s"])  # type: ignore[arg-type]
    result: dict[str, Any] = {
        "bench": "call_setup",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "what": "page navigation start -> first decoded video frame from both other people, slowest of 3",
        "runs": args.runs,
        "settle_s": args.settle,
        "serve_args": args.serve_arg,
        "certificate": args.certificate,
        "goal_median_s": 1.0,
        "goal_met": ours_median <= 1.0,
        "median_s": ours_median,
        "ratio_to_bare": round(ours_median / floor_median, 3),
        "overhead_s": round(ours_median - floor_median, 3),
        "kijkmee": ours,
        "bare": floor,
        "compare": {name: compared(summary(measured[name]), ours_median, floor_median) for name in others},
        "machine": {"cpus": len(os.sched_getaffinity(0)), "load_average_1min_before": round(load_before, 1),
                    "python": platform.python_version(),
                    "chromium": subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True,
                                               check=False).stdout.strip()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "call_setup.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "call_setup.md").write_text(report(result))
    print(json.dumps({k: result[k] for k in ("median_s", "goal_met", "ratio_to_bare", "overhead_s")}
                     | {"bare_median_s": floor_median}))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
