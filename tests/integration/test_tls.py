"""TLS on the real listener: 1.0 and 1.1 refused, 1.2 and 1.3 accepted (Python ssl and openssl s_client).

Each refusal is paired with a control: the same old-protocol client completes a handshake with a
deliberately permissive server, so a refusal proves our policy, not a client that cannot speak TLS 1.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from kijkmee.config import ServeConfig
from kijkmee.devcert import ensure_dev_certificate
from kijkmee.serve import running
from tests.conftest import Server

OLD = [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1]
GOOD = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("ALL:@SECLEVEL=0")  # let OpenSSL offer the old protocol at all
    return context


def handshake(port: int, version: ssl.TLSVersion) -> str:
    """Return the negotiated protocol, or raise ssl.SSLError / OSError."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client_context(version).wrap_socket(
        raw, server_hostname="localhost"
    ) as tls:
        return str(tls.version())


@contextlib.contextmanager
def permissive_server(tmp_path: object) -> Iterator[int]:
    """A throwaway TLS server that allows TLS 1.0: the control for the refusal tests."""
    import pathlib
    import socket
    import threading

    folder = pathlib.Path(str(tmp_path)) / "permissive"
    import datetime as dt

    cert, key, _ = ensure_dev_certificate(folder, dt.datetime.now(dt.UTC))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(ssl.SSLError, OSError), context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize("version", OLD, ids=lambda v: v.name)
async def test_old_tls_is_refused_by_kijkmee_but_works_against_a_permissive_server(
    server: Server, tmp_path: object, version: ssl.TLSVersion
) -> None:
    with permissive_server(tmp_path) as control_port:
        expected = {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}[version.name]
        assert await asyncio.to_thread(handshake, control_port, version) == expected
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.to_thread(handshake, server.port, version)


@pytest.mark.parametrize("version", GOOD, ids=lambda v: v.name)
async def test_tls_12_and_13_are_accepted(server: Server, version: ssl.TLSVersion) -> None:
    negotiated = await asyncio.to_thread(handshake, server.port, version)
    assert negotiated == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]


def s_client(port: int, flag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", flag, "-cipher", "ALL:@SECLEVEL=0"],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
@pytest.mark.parametrize(("flag", "negotiated"), [("-tls1", None), ("-tls1_1", None), ("-tls1_2", "TLSv1.2"),
                                                  ("-tls1_3", "TLSv1.3")])
async def test_openssl_s_client(server: Server, flag: str, negotiated: str | None) -> None:
    result = await asyncio.to_thread(s_client, server.port, flag)
    output = result.stdout + result.stderr
    session = re.search(r"New, (TLSv1\.\d|\(NONE\)), Cipher is (\S+)", output)
    assert session is not None, output
    if negotiated:
        assert result.returncode == 0, output
        assert session.group(1) == negotiated and session.group(2) != "(NONE)"
    else:
        assert result.returncode != 0, output
        assert session.group(2) == "(NONE)"


async def test_tls12_offers_only_forward_secret_aead_suites(server: Server) -> None:
    weak = ["AES128-SHA", "AES256-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256", "DES-CBC3-SHA"]
    context = client_context(ssl.TLSVersion.TLSv1_2)
    context.set_ciphers(":".join(weak))
    import socket

    def attempt() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, context.wrap_socket(raw):
            pass

    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(attempt)


@pytest.fixture
async def server_with_redirect(tmp_path: object) -> AsyncIterator[Server]:
    import pathlib

    from tests.conftest import free_port

    data_dir = pathlib.Path(str(tmp_path)) / "d"
    config = ServeConfig(port=0, http_port=free_port(), turn_port=0, turns_port=0, data_dir=data_dir).validate()
    async with running(config, say=False) as live:
        yield Server(url=live.url, port=live.port, data_dir=config.data_dir, http_port=live.http_port)


async def test_plain_http_only_redirects(server_with_redirect: Server) -> None:
    server = server_with_redirect
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.http_port}/r/abc?x=1", allow_redirects=False) as response:
            assert response.status == 308
            assert response.headers["Location"] == f"https://127.0.0.1:{server.port}/r/abc?x=1"
            assert (await response.read()) in (b"", b"308: Permanent Redirect")
        async with http.post(f"http://127.0.0.1:{server.http_port}/rooms", allow_redirects=False) as response:
            assert response.status == 308


async def test_every_page_carries_the_security_headers(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/r/" + "a" * 22, "/healthz", "/static/js/room.js", "/missing", "/r/bad"):
            async with http.get(server.url + path, ssl=False) as response:
                headers = response.headers
                csp = headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "http" not in csp, path
                assert "frame-ancestors 'none'" in csp
                assert headers["Strict-Transport-Security"].startswith("max-age=")
                assert "camera=(self)" in headers["Permissions-Policy"]
                assert "microphone=(self)" in headers["Permissions-Policy"]
                assert "display-capture=(self)" in headers["Permissions-Policy"]
                assert headers["Referrer-Policy"] == "no-referrer"
                assert headers["X-Content-Type-Options"] == "nosniff"
                assert headers["Server"] == "kijkmee"


async def test_subprocessor_list_is_served_as_page_and_json(server: Server) -> None:
    import jsonschema

    from metadata_store.subprocessors import SUBPROCESSORS_SCHEMA

    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/privacy/subprocessors", ssl=False) as response:
            assert response.status == 200 and response.content_type == "text/html"
            page = await response.text()
            assert "Subverwerkers" in page and "Geen subverwerkers" in page and "<script" not in page
            assert "style=" not in page
        async with http.get(server.url + "/privacy/subprocessors?format=json", ssl=False) as response:
            body = await response.json()
    jsonschema.validate(body, SUBPROCESSORS_SCHEMA)
    assert body["subprocessors"] == [] and body["transfers_outside_eu"] is False
