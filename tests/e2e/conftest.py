"""Browser and WebRTC fixtures. These tests run only inside a network namespace that has nothing but
loopback (`make test` makes one), because Chromium and aiortc gather and try every interface."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, ViewportSize, sync_playwright

from tests.conftest import IN_CI, in_private_netns
from tests.e2e.ca import Pki, make_pki

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DOCS_SCREENSHOTS = ARTIFACTS.parent / "docs" / "screenshots"
UPDATE_DOCS_SCREENSHOTS = os.environ.get("KIJKMEE_DOCS_SCREENSHOTS") == "1"
"""`make screenshots` sets it: the documentation's screenshots are then replaced by the ones these tests
take. Otherwise they stay in test-artifacts/ only, so that `make test` leaves the checkout as it was."""


def publish_screenshot(shot: Path) -> None:
    """A screenshot the documentation shows (docs/screenshots/<same name>): replaced under `make screenshots`."""
    if UPDATE_DOCS_SCREENSHOTS:
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOTS / shot.name)


@pytest.fixture(autouse=True, scope="module")
def _only_in_private_netns() -> None:
    if in_private_netns():
        return
    reason = "browser/media test: run inside a network namespace with only loopback (`make test` does)"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class ServeProcess:
    url: str
    data_dir: Path
    log_file: Path
    process: subprocess.Popen[str]

    def logs(self) -> str:
        return self.log_file.read_text(encoding="utf-8")


def start_serve(data_dir: Path, *extra: str, checkout: Path | None = None) -> ServeProcess:
    """`kijkmee serve` as a user starts it, on a port the OS picks; the URL is read from what it prints.

    `checkout`: run another checkout's code and client files (a benchmark's comparison) with this
    Python: it becomes the working directory (which `python -m` puts first on the path) and PYTHONPATH."""
    log_file = data_dir.parent / f"{data_dir.name}-stderr.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    process = subprocess.Popen(
        [sys.executable, "-m", "kijkmee", "serve", "--port", "0", "--turn-port", "0", "--turns-port", "0",
         "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE, stderr=log_file.open("w"), text=True, env=env, cwd=checkout,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"Open (https://\S+) in your browser", line)
        if match:
            return ServeProcess(match.group(1), data_dir, log_file, process)
    process.kill()
    raise RuntimeError(f"kijkmee serve did not start: {log_file.read_text()}")


def stop_serve(server: ServeProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    server = start_serve(tmp_path_factory.mktemp("serve") / "data")
    yield server
    stop_serve(server)


# ---------------------------------------------------------------------------------------- Chromium


def launch_chromium(playwright: Playwright, *, pki: Pki | None = None, extra_args: Iterable[str] = (),
                    drop_args: Iterable[str] = ()) -> Browser:
    """Debian's Chromium with CHROMIUM_ARGS, less `drop_args`, plus `extra_args` (a module that needs
    another fake-device set-up or no permission answers says only that).

    With `pki`, HOME is the test HOME whose NSS database trusts the test CA: Chromium then accepts turns:
    and https from the test servers with its own certificate checks, none of them switched off."""
    dropped = set(drop_args)
    args = [arg for arg in CHROMIUM_ARGS if arg not in dropped] + list(extra_args)
    if pki is None:
        return playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args,
                                      env=pki.browser_env)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One Chromium per test module (starting one takes seconds); a module that needs another kind of
    browser defines its own `browser` with launch_chromium()."""
    chromium = launch_chromium(playwright)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA and a certificate for 127.0.0.1 (tests/e2e/ca.py), for a serve over trusted https."""
    return trusted_pki(tmp_path_factory)


def trusted_pki(tmp_path_factory: pytest.TempPathFactory, ips: tuple[str, ...] = ("127.0.0.1",)) -> Pki:
    """The test CA with a server certificate for `ips`. Without certutil the trusted HOME can't be made:
    skipped on a developer's machine, a failure in CI (where `make test` installs it)."""
    if shutil.which("certutil") is None:
        (pytest.fail if IN_CI else pytest.skip)("certutil (libnss3-tools) is not installed; make test installs it")
    return make_pki(tmp_path_factory.mktemp("pki"), ips=ips)


class People:
    """Browser contexts, one per person (so each has its own cookies, storage and devices), all closed
    after the test: by `close()` or at the end of a `with` block.

    `ignore_https_errors` is for a serve with its own self-signed certificate; leave it off where the
    browser trusts the test CA (launch_chromium(pki=...)), so that certificates really are checked.
    `init_script` runs in every frame of every page opened here, before the page's own scripts."""

    def __init__(self, browser: Browser, *, ignore_https_errors: bool = True, viewport: ViewportSize | None = None,
                 init_script: str | None = None) -> None:
        self.browser = browser
        self.ignore_https_errors = ignore_https_errors
        self.viewport: ViewportSize = viewport or {"width": 1280, "height": 720}
        self.init_script = init_script
        self.contexts: list[BrowserContext] = []

    def open(self, url: str | None, locale: str = "en-GB", user_agent: str | None = None,
             viewport: ViewportSize | None = None, init_script: str | None = None,
             before: Callable[[Page], object] | None = None) -> Page:
        """A new person's page; `before` runs on it before it loads `url` (routes, for one); no `url`: blank."""
        context = self.browser.new_context(ignore_https_errors=self.ignore_https_errors, locale=locale,
                                           user_agent=user_agent, viewport=viewport or self.viewport)
        self.contexts.append(context)
        for script in (self.init_script, init_script):
            if script:
                context.add_init_script(script)
        page = context.new_page()
        if before:
            before(page)
        if url:
            page.goto(url)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()

    def __enter__(self) -> People:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@pytest.fixture
def people(browser: Browser) -> Iterator[People]:
    with People(browser) as crowd:
        yield crowd


# JavaScript run in a page: per peer, what its RTCPeerConnection has received and over which route.
PEER_STATS_JS = """
async () => {
  const out = {};
  for (const [id, pc] of window.kijkmee.pcs) {
    const stats = await pc.getStats();
    const peer = {frames: 0, audioSamples: 0, audioEnergy: 0, connection: pc.connectionState, route: null};
    const byId = new Map();
    stats.forEach(r => byId.set(r.id, r));
    stats.forEach(r => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') peer.frames += r.framesDecoded || 0;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        peer.audioSamples += r.totalSamplesReceived || 0;
        peer.audioEnergy += r.totalAudioEnergy || 0;
      }
      if (r.type === 'transport' && r.selectedCandidatePairId) {
        const pair = byId.get(r.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        const remote = pair && byId.get(pair.remoteCandidateId);
        if (local && remote) peer.route = {local: local.candidateType, remote: remote.candidateType,
                                           localAddress: local.address, remoteAddress: remote.address,
                                           protocol: local.protocol, dtls: r.dtlsState};
      }
    });
    out[id] = peer;
  }
  return out;
}
"""
