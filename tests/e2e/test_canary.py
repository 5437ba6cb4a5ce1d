"""Canary proof (issue 4, item 12; DESIGN, clause 5.3): a real three-person call in Debian's Chromium
carries unique markers where kijkmee must not keep anything, and one person is erased afterwards.

- A's browser sends a user agent with a marker;
- every page's offers and answers carry an extra SDP attribute line `a=x-kijkmee-canary:<marker>`
  (added to what the page sends over the signaling WebSocket; the other browsers receive it and the
  call still connects);
- every join carries an unused field (`company: <marker>`) that the server must drop;
- B types a name that is a marker and is erased afterwards through `kijkmee admin subject erase`;
  C types another name and is kept.

Afterwards, with the server still running and again after it stopped, no marker and nothing of B
(the typed name, and the erased row's ciphertext and blind index) is in any file of the data folder
(database, -wal, -shm, key folder with the deletion ledger, certificates), in the server's output
(`--log-level debug`: the option promises logs without IPs, names, SDP or user agents at any level),
in the backup (its bytes and its decrypted content) or in the audit log. IPs and typed names exist
only as ciphertext in the columns the schema declares for them: decrypting with the key folder shows
A without a name, C with hers, both from 127.0.0.1, and B gone.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from metadata_store.backup import LEDGER_FILE, read_backup
from metadata_store.crypto import KeyStore, default_key_folder
from metadata_store.schema import PERSONAL, TABLES, DataClass, Protection
from metadata_store.store import DEFAULT_CONTROLLER
from tests import stored
from tests.e2e.conftest import PEER_STATS_JS, ServeProcess, start_serve, stop_serve

pytestmark = pytest.mark.netns

IP = "127.0.0.1"  # every participant joins over loopback
PASSWORDS = {"admin1": "gravel lantern orbit 4471", "po1": "harbour quiet tulip 9083"}
# Nothing of the caller's own kijkmee setup may leak into the CLI (KIJKMEE_DATA_DIR, KIJKMEE_OPERATOR, ...).
ENV = {k: v for k, v in os.environ.items() if not k.startswith("KIJKMEE_")}

# Runs in every page before its own scripts. Socket.IO sends each event over the WebSocket as one text
# frame `42<ack id>["event", payload]`; on the way out this adds the unused join field and an SDP
# attribute line (session level: after `t=`, before the first m= section) to offers and answers, and
# counts what it changed so the test knows the markers really went out. It also counts descriptions
# from the other browsers that arrive with the line (Chromium drops the unknown line when it parses
# them, so `remoteDescription` no longer shows it).
CANARY_JS = """
(([sdpLine, field]) => {
  const sent = {join: 0, sdp: 0, received: 0};
  Object.defineProperty(window, '__kijkmeeCanary', {value: sent});
  const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (description, ...rest) {
    if (description && typeof description.sdp === 'string' && description.sdp.includes(sdpLine)) sent.received += 1;
    return setRemote.call(this, description, ...rest);
  };
  const withLine = (sdp) => sdp.replace(/(\\r?\\nt=[^\\r\\n]*\\r?\\n)/, `$1${sdpLine}\\r\\n`);
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    const frame = typeof data === 'string' ? /^42(\\d*)(\\[[\\s\\S]*\\])$/.exec(data) : null;
    if (frame) {
      const packet = JSON.parse(frame[2]);
      const [event, payload] = packet;
      if (event === 'join' && payload && typeof payload === 'object') {
        payload.company = field;
        sent.join += 1;
      } else if ((event === 'offer' || event === 'answer') && payload && typeof payload.sdp === 'string') {
        const sdp = withLine(payload.sdp);
        if (sdp !== payload.sdp) sent.sdp += 1;
        payload.sdp = sdp;
      }
      data = '42' + frame[1] + JSON.stringify(packet);
    }
    return send.call(this, data);
  };
})(%s);
"""

# --- markers ---------------------------------------------------------------------------------------------


class Markers:
    """Unique per run. Each needle is the random part alone, so a copy in any case-folded, escaped or
    reformatted form (JSON, URL encoding, a normalised name) is still found."""

    def __init__(self) -> None:
        self.ua = secrets.token_hex(16)
        self.sdp = secrets.token_hex(16)
        self.field = secrets.token_hex(16)
        self.erased = secrets.token_hex(8)
        self.kept = secrets.token_hex(8)
        self.user_agent = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                           f"Chrome/120.0.0.0 Safari/537.36 kijkmee-canary-UA-{self.ua}")
        self.sdp_line = f"a=x-kijkmee-canary:{self.sdp}"
        self.company = f"kijkmee-canary-company-{self.field}"
        self.erased_name = f"Canary Naam {self.erased}"
        self.kept_name = f"Carla Kanarie {self.kept}"

    def never(self) -> dict[str, str]:
        """What may appear nowhere, not even encrypted-looking places: the markers and the erased name."""
        return {"user agent": self.ua, "SDP line": self.sdp, "unused field": self.field,
                "erased name": self.erased}


def occurrences(data: bytes, needles: Mapping[str, str | bytes]) -> list[str]:
    """Which needles `data` holds: text as UTF-8 in any case or as UTF-16, bytes as they are."""
    lowered = data.lower()
    found = []
    for what, needle in needles.items():
        if isinstance(needle, bytes):
            hit = needle in data
        else:
            hit = needle.lower().encode() in lowered or any(needle.encode(codec) in data
                                                            for codec in ("utf-16-le", "utf-16-be"))
        if hit:
            found.append(what)
    return found


def files_under(folder: Path) -> Iterator[Path]:
    for root, _dirs, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


# --- the call ----------------------------------------------------------------------------------------------


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def open_person(browser: Browser, contexts: list[BrowserContext], markers: Markers, url: str,
                user_agent: str | None = None) -> Page:
    context = browser.new_context(ignore_https_errors=True, locale="nl-NL", user_agent=user_agent,
                                  viewport={"width": 960, "height": 540})
    contexts.append(context)
    context.add_init_script(CANARY_JS % json.dumps([markers.sdp_line, markers.company]))
    page = context.new_page()
    page.goto(url)
    return page


def wait_state(page: Page, state: str, timeout: float = 15_000) -> None:
    page.wait_for_function("s => window.kijkmee && window.kijkmee.state === s", arg=state, timeout=timeout)


def join(page: Page, name: str | None) -> None:
    expect(page.locator("#join")).to_be_enabled()
    if name is not None:
        page.fill("#name", name)
    page.click("#join")
    wait_state(page, "in-call")


def wait_for_media(page: Page, count: int, timeout: float = 20.0) -> dict[str, Any]:
    """Until `count` peers each deliver decoded video and audio over a connected DTLS transport."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = page.evaluate(PEER_STATS_JS)
        ready = [s for s in stats.values()
                 if s["frames"] > 0 and s["audioSamples"] > 0 and s["connection"] == "connected"]
        if len(stats) == count and len(ready) == count:
            return stats
        time.sleep(0.25)
    raise AssertionError(f"media from {count} peers not flowing: {json.dumps(stats)}")


def hold_call(browser: Browser, contexts: list[BrowserContext], markers: Markers, base_url: str) -> str:
    """A, B and C join one call one after the other, see and hear each other, and leave. Returns the room id."""
    anna = open_person(browser, contexts, markers, base_url + "/", user_agent=markers.user_agent)
    anna.click("#start-call")
    link = anna.locator("#room-link")
    expect(link).to_be_visible()
    url = link.get_attribute("href")
    assert url and url.startswith(base_url + "/r/")
    anna.goto(url)
    assert markers.ua in anna.evaluate("navigator.userAgent")
    join(anna, None)  # A types no name
    bram = open_person(browser, contexts, markers, url)
    join(bram, markers.erased_name)
    carla = open_person(browser, contexts, markers, url)
    join(carla, markers.kept_name)

    people = (anna, bram, carla)
    for page in people:
        for peer in wait_for_media(page, 2).values():
            assert peer["route"]["dtls"] == "connected"
    for page in people:
        # Each page sent its join with the unused field and its offers/answers with the canary line,
        # and applied its peers' descriptions with the line in (one offer or answer from each): the
        # server relayed it, and the call above still connected.
        sent = page.evaluate("window.__kijkmeeCanary")
        assert sent["join"] == 1 and sent["sdp"] >= 2 and sent["received"] >= 2, sent
    expect(bram.locator(".tile:not(.self)")).to_contain_text([markers.kept_name])

    for page in people:
        page.click("#leave")
        wait_state(page, "left")
    return url.rsplit("/", 1)[1]


# --- the operators' side -------------------------------------------------------------------------------------


def admin(data_dir: Path, actor: str | None, *args: str, stdin: str = "") -> str:
    """`kijkmee admin --data-dir DATA [--as ACTOR] ARGS...` as an operator runs it; returns its stdout."""
    who = ["--as", actor] if actor else []
    done = subprocess.run(
        [sys.executable, "-m", "kijkmee", "admin", "--data-dir", str(data_dir), *who, *args],
        input=stdin, capture_output=True, text=True, env=ENV, cwd=data_dir.parent, timeout=60, check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def session_ciphertexts(data_dir: Path, name: str) -> list[bytes]:
    """The stored bytes of the session of the person who typed `name`: the name's and the IP's
    ciphertext and the name's blind index, read the way someone with the files and keys would."""
    key = KeyStore(default_key_folder(data_dir)).get(DEFAULT_CONTROLLER)
    uri = f"file:{data_dir / 'kijkmee.sqlite3'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT ip, name, name_index FROM sessions WHERE controller_id = ?",
                          (DEFAULT_CONTROLLER,)).fetchall()
    found = [
        [bytes(ip), bytes(blob), index.encode()]
        for ip, blob, index in rows
        if blob is not None and key.decrypt("sessions", "name", blob) == name
    ]
    assert len(found) == 1, f"expected one session named {name!r}, found {len(found)}"
    return found[0]


# --- the checks ----------------------------------------------------------------------------------------------


def assert_data_folder_clean(data_dir: Path, forbidden: Mapping[str, str | bytes], plaintext: Mapping[str, str],
                             when: str) -> list[str]:
    """No forbidden needle in any file under the data folder; no plaintext personal value in the
    database files. Returns the database files seen."""
    database_files = {f"kijkmee.sqlite3{suffix}" for suffix in ("", "-wal", "-shm", "-journal")}
    seen = []
    leaks = []
    for path in files_under(data_dir):
        data = path.read_bytes()
        hits = occurrences(data, forbidden)
        if path.name in database_files:
            seen.append(f"{path.name} ({len(data)} bytes)")
            hits += occurrences(data, plaintext)
        if hits:
            leaks.append(f"{path.relative_to(data_dir)}: {', '.join(hits)}")
    assert not leaks, f"{when}: found in the data folder: {leaks}"
    assert any(s.startswith("kijkmee.sqlite3 ") for s in seen), seen
    return seen


def decrypted_cells(documents: list[dict[str, Any]], keys: KeyStore) -> Iterator[tuple[str, str, object]]:
    """(table, column, value) of every cell of a backup's tables, personal values decrypted with the
    key of the row's controller."""
    columns = {table: {c.name: c for c in cols} for table, cols in TABLES.items()}
    for doc in documents:
        table = doc["table"]
        for row in doc["rows"]:
            record = dict(zip(doc["columns"], row, strict=True))
            for name, value in record.items():
                column = columns[table][name]
                if column.protection is Protection.ENCRYPTED and column.data_class in PERSONAL and value is not None:
                    value = keys.get(record["controller_id"]).decrypt(table, name, base64.b64decode(value["b64"]))
                yield table, name, value


def assert_backup(backup: Path, keys: KeyStore, markers: Markers, forbidden: Mapping[str, str | bytes]) -> None:
    """Nothing forbidden and no plaintext IP or name in the file or in its decrypted tables; decrypting
    the personal columns too shows IPs only in IP columns, names only in typed-name columns, and no B."""
    plaintext = {"IP": IP, "kept name": markers.kept}
    leaks = occurrences(backup.read_bytes(), {**forbidden, **plaintext})
    assert not leaks, f"in the backup file's bytes: {leaks}"
    _header, documents = read_backup(backup, keys)
    encoded = {f"{what} (base64)": base64.b64encode(needle).decode()
               for what, needle in forbidden.items() if isinstance(needle, bytes)}
    leaks = occurrences(json.dumps(documents).encode(), {**forbidden, **encoded, **plaintext})
    assert not leaks, f"in the decrypted backup's tables: {leaks}"
    columns = {table: {c.name: c for c in cols} for table, cols in TABLES.items()}
    sessions = []
    for table, name, value in decrypted_cells(documents, keys):
        text = json.dumps(value, default=str)
        leaks = occurrences(text.encode(), forbidden)
        assert not leaks, f"in the backup's {table}.{name}, decrypted: {leaks}"
        if IP in text:
            assert columns[table][name].data_class is DataClass.IP, f"an IP in the backup's {table}.{name}"
        if markers.kept in text:
            assert columns[table][name].data_class is DataClass.TYPED_NAME, f"C's name in the backup's {table}.{name}"
        if table == "sessions" and name in ("ip", "name"):
            sessions.append((name, value))
    assert sessions == [("ip", IP), ("name", None), ("ip", IP), ("name", markers.kept_name)], sessions


# --- the test ------------------------------------------------------------------------------------------------


def test_canary_markers_and_an_erased_name_are_found_nowhere(
    browser: Browser, contexts: list[BrowserContext], tmp_path: Path
) -> None:
    started = time.monotonic()
    markers = Markers()
    plaintext = {"IP": IP, "kept name": markers.kept}  # may exist only encrypted in the database files
    server: ServeProcess = start_serve(tmp_path / "data", "--log-level", "debug")
    data_dir = server.data_dir
    stdout = ""
    try:
        room_id = hold_call(browser, contexts, markers, server.url)
        for context in contexts:
            context.close()
        contexts.clear()

        # Before the erasure: B's session as stored (ciphertexts and blind index), to look for later.
        erased_ip, erased_name, erased_index = session_ciphertexts(data_dir, markers.erased_name)
        forbidden: dict[str, str | bytes] = {
            **markers.never(), "erased IP ciphertext": erased_ip, "erased name ciphertext": erased_name,
            "erased name blind index": erased_index,
        }

        # The operators: bootstrap an admin, who adds a privacy officer; the privacy officer erases B,
        # the admin makes a backup, the privacy officer reads the audit log.
        admin(data_dir, None, "operator", "add", "admin1", "--role", "admin", "--password-stdin",
              stdin=PASSWORDS["admin1"] + "\n")
        admin(data_dir, "admin1", "operator", "add", "po1", "--role", "privacy_officer", "--password-stdin",
              stdin=PASSWORDS["po1"] + "\n")
        admin(data_dir, "po1", "subject", "erase", "--controller", DEFAULT_CONTROLLER, "--name", markers.erased_name)
        backup = tmp_path / "b.backup"
        admin(data_dir, "admin1", "backup", "run", "--out", str(backup))
        audit_log = admin(data_dir, "po1", "audit", "export")

        live_files = assert_data_folder_clean(data_dir, forbidden, plaintext, "server running")
    finally:
        stop_serve(server)
        assert server.process.stdout is not None
        stdout = server.process.stdout.read()
    stopped_files = assert_data_folder_clean(data_dir, forbidden, plaintext, "server stopped")
    key_leaks = [f"{path.name}: {', '.join(hits)}" for path in files_under(default_key_folder(data_dir))
                 if (hits := occurrences(path.read_bytes(), {**forbidden, **plaintext}))]
    assert not key_leaks, f"found in the key folder (keys, deletion ledger): {key_leaks}"

    # The deletion ledger (in the key folder, inside the data folder here) recorded the erasure by id only.
    ledger = [json.loads(line) for line in (default_key_folder(data_dir) / LEDGER_FILE).read_text().splitlines()]
    assert [entry["kind"] for entry in ledger] == ["erase"] and len(ledger[0]["session_ids"]) == 1

    # The server's output: no marker, no erased or kept name, no participant's IP. Only its own
    # listening addresses may be printed (the URL to open, the relay's ports) on stdout.
    logs = server.logs()
    assert '"route": "/r/{room}"' in logs  # the access log is on, and writes route templates only
    assert not occurrences(logs.encode(), {**markers.never(), "kept name": markers.kept, "IP": IP,
                                           "room id": room_id}), logs
    assert not occurrences(stdout.encode(), {**markers.never(), "kept name": markers.kept, "room id": room_id}), stdout
    own_addresses = ("kijkmee is running. Open https://127.0.0.1:", "TURN relay on ")
    for line in stdout.splitlines():
        assert IP not in line or line.startswith(own_addresses), line

    # The backup: nothing forbidden in its bytes or in its decrypted content; IPs and names only in
    # their own columns once decrypted, and only A's and C's.
    assert_backup(backup, KeyStore(default_key_folder(data_dir)), markers, forbidden)

    # The live database, read with the key folder: A without a name, C with hers, B gone.
    assert stored.session_rows(data_dir) == [(room_id, IP, None, 1), (room_id, IP, markers.kept_name, 1)]

    # The audit log names po1 and the erasure, and holds ids only.
    entries = [json.loads(line) for line in audit_log.splitlines()]
    assert any(e["actor"] == "po1" and e["action"] == "subject.erase" for e in entries), entries
    assert not occurrences(audit_log.encode(), {**forbidden, "kept name": markers.kept, "IP": IP}), audit_log

    elapsed = time.monotonic() - started
    print(f"canary: {elapsed:.1f} s; database files while running: {live_files}; after stop: {stopped_files}")

