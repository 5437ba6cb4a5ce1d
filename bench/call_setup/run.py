"""Call set-up time: page load → first decoded remote video frame, for every participant of a 3-way call.

Three Chromium pages open the same call link at once and join as soon as the join button is enabled
(no human think time). Each page records, against its own navigation start, the moment its
RTCPeerConnections have decoded a first video frame from both other people. A run's figure is the
slowest of the three. Run inside a loopback-only network namespace: `make bench-call-setup`.

Each run gets fresh browser contexts (no cache, no cookies: a first visit). Opening one is opening a
browser window, and Chromium then starts that window's own pages (its omnibox pop-up, a WebUI of some
2,500 resources, about 0.3 s of CPU per browser in a trace); the bench waits `--settle` seconds for
that before it opens the link, as a person's browser is open before they click one. Without the wait
(`--settle 0`) that start-up competes with the call for the two cores and adds ~0.3-0.45 s here.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import in_private_netns  # noqa: E402
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


async def one_run(browsers: list[Browser], base_url: str, settle: float) -> list[dict[str, float]]:
    room = await create_room(base_url)
    contexts = [await browsers[i % len(browsers)].new_context(ignore_https_errors=True) for i in range(3)]
    try:
        pages = [await context.new_page() for context in contexts]
        for page in pages:
            await page.add_init_script(FIRST_FRAMES_PROBE)
        await asyncio.sleep(settle)  # the new windows finish starting (see the top of this file)

        async def attend(page: Page) -> dict[str, float]:
            await page.goto(f"{base_url}/r/{room}")
            # Look every 100 ms: the page records the moment itself, and Playwright's default
            # (requestAnimationFrame) would make all three pages draw 60 frames a second meanwhile.
            await page.wait_for_function("() => window.__firstFramesMs !== undefined", timeout=30_000,
                                         polling=100)
            marks = await page.evaluate(
                "() => ({ready: window.__marks.joinClicked, inCall: window.__marks.inCall,"
                " frames: window.__firstFramesMs})"
            )
            return {name: float(value) / 1000 for name, value in marks.items()}

        return list(await asyncio.gather(*(attend(page) for page in pages)))
    finally:
        for context in contexts:
            await context.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="measured runs (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default 1)")
    parser.add_argument("--one-browser", action="store_true", help="all three people in one Chromium")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between opening the browser windows and opening the link (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    args = parser.parse_args()
    if not in_private_netns():
        print("run inside a loopback-only network namespace: make bench-call-setup", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]  # other work on the machine: the bench shares its two cores
    server = start_serve(Path(tempfile.mkdtemp(prefix="kijkmee-bench-")) / "data")
    try:
        async with async_playwright() as playwright:
            # One browser per person, as three people on three devices have: in one browser, the three
            # pages share Chromium's one fake capture device, whose restarts stall everyone's video.
            browsers = [await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                        for _ in range(1 if args.one_browser else 3)]
            for _ in range(args.warmup):
                await one_run(browsers, server.url, args.settle)
            runs = []
            phases: list[dict[str, float]] = []
            for index in range(args.runs):
                people = await one_run(browsers, server.url, args.settle)
                phases += people
                per_person = [person["frames"] for person in people]
                runs.append(per_person)
                print(f"run {index + 1}: slowest {max(per_person):.3f} s  (each: "
                      + ", ".join(f"{t:.3f}" for t in per_person) + ")")
            for browser in browsers:
                await browser.close()
    finally:
        stop_serve(server)
    slowest = [max(run) for run in runs]
    result = {
        "bench": "call_setup",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "what": "page navigation start -> first decoded video frame from both other people, slowest of 3",
        "runs": args.runs,
        "settle_s": args.settle,
        "median_s": round(statistics.median(slowest), 3),
        "p90_s": round(percentile(slowest, 0.9), 3),
        "goal_median_s": 1.0,
        "goal_met": statistics.median(slowest) <= 1.0,
        "per_run_per_person_s": [[round(t, 3) for t in run] for run in runs],
        "phase_medians_s": {
            "page_load_to_join_ready": round(statistics.median(p["ready"] for p in phases), 3),
            "join_to_admitted": round(statistics.median(p["inCall"] - p["ready"] for p in phases), 3),
            "admitted_to_first_frames": round(statistics.median(p["frames"] - p["inCall"] for p in phases), 3),
        },
        "machine": {"cpus": len(os.sched_getaffinity(0)), "load_average_1min_before": round(load_before, 1),
                    "python": platform.python_version(),
                    "chromium": subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True,
                                               check=False).stdout.strip()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "call_setup.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "call_setup.md").write_text(
        f"# call_setup\n\n{result['what']}, {args.runs} runs of a 3-way call on loopback "
        f"({result['machine']['chromium']}, {result['machine']['cpus']} cores).\n\n"
        f"| median | p90 | goal (median) | met |\n|---|---|---|---|\n"
        f"| {result['median_s']:.3f} s | {result['p90_s']:.3f} s | ≤ 1.000 s "
        f"| {'yes' if result['goal_met'] else 'no'} |\n\n"
        "Median of each phase over every person and run: page load to join ready "
        f"{result['phase_medians_s']['page_load_to_join_ready']:.3f} s, join to admitted "
        f"{result['phase_medians_s']['join_to_admitted']:.3f} s, admitted to first frames from both "
        f"{result['phase_medians_s']['admitted_to_first_frames']:.3f} s. One Chromium per person "
        "(three browsers and six software VP8 encoders share this machine's two cores); fresh browser "
        f"contexts each run, the link opened {args.settle:g} s after their windows (`--settle`); "
        f"1-minute load average {result['machine']['load_average_1min_before']} before the bench started "
        "(other work on the machine).\n"
    )
    print(json.dumps({k: result[k] for k in ("median_s", "p90_s", "goal_met")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
