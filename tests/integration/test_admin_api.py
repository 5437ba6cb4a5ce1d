"""The admin API on a real `kijkmee serve`: sign-in with password and TOTP, the session cookie, CSRF,
every route x role pair against the authorisation matrix, and a privacy officer's request end to end."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jsonschema
import pytest
import pytest_asyncio

from kijkmee.config import ServeConfig
from kijkmee.serve import RunningServer, running
from kijkmee.storage import open_store
from metadata_store import audit, operators
from metadata_store.backup import read_backup
from metadata_store.crypto import KeyStore, default_key_folder
from metadata_store.exports import SUBJECT_EXPORT_SCHEMA
from metadata_store.operators import Role, allowed
from metadata_store.service import DataHandling
from metadata_store.store import DEFAULT_CONTROLLER
from signaling.admin_api import ROUTES
from tests.integration.sio_helpers import Participant, create_room

pytestmark = pytest.mark.asyncio(loop_scope="module")  # one server for the module, on one loop

PASSWORD = "paarse-olifant-zwemt-7"
NOW = dt.datetime.now(dt.UTC)


@dataclass
class Operator:
    username: str
    role: Role
    secret: bytes
    step: int = 0

    def code(self) -> str:
        """A code for a step not used yet (each code signs in once; the window allows the next step)."""
        now = time.time()
        self.step = max(self.step + 1, operators.totp_step(now) - 1)
        if self.step > operators.totp_step(now) + 1:
            pytest.fail("ran out of TOTP steps: too many sign-ins within 30 s for one account")
        return operators.hotp(self.secret, self.step)


@dataclass
class Site:
    live: RunningServer
    people: dict[Role, Operator]
    data_dir: Path
    signed_in: dict[Role, tuple[aiohttp.ClientSession, str]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    data_dir = tmp_path_factory.mktemp("admin") / "data"
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=data_dir).validate()
    store = await open_store(config)
    people: dict[Role, Operator] = {}
    try:
        service = DataHandling(store)
        for role in Role:
            record, _ = await service.add_operator(f"op-{role.value}".replace("_", "-"), role.value, PASSWORD,
                                                   "setup")
            people[role] = Operator(record.username, role, record.totp_secret)
    finally:
        await store.close()
    async with running(config, say=False) as live:
        site = Site(live, people, data_dir, {})
        try:
            yield site
        finally:
            for session, _ in site.signed_in.values():
                await session.close()


async def signed_in(site: Site, role: Role) -> tuple[aiohttp.ClientSession, str]:
    """One signed-in session per role for the module (each TOTP code signs in once, so sign-ins are scarce)."""
    if role not in site.signed_in:
        site.signed_in[role] = await sign_in(site, role)
    return site.signed_in[role]


async def sign_in(site: Site, role: Role) -> tuple[aiohttp.ClientSession, str]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=False), cookie_jar=aiohttp.CookieJar(unsafe=True)
    )
    person = site.people[role]
    async with session.post(f"{site.live.url}/admin/api/session",
                            json={"username": person.username, "password": PASSWORD, "code": person.code()}) as r:
        body = await r.json()
        assert r.status == 200, body
    return session, body["csrf_token"]


def _path(template: str) -> str:
    return template.replace("{id}", "no-such-thing").replace("{name}", "no-such-operator")


BODIES = {
    "/admin/api/controllers": {"id": "ctl-matrix", "name": "Matrix test"},
    "/admin/api/subjects/search": {"controller": DEFAULT_CONTROLLER, "by": "name", "value": "Nobody"},
    "/admin/api/subjects/requests": {"controller": DEFAULT_CONTROLLER, "kind": "access", "by": "name",
                                     "value": "Nobody"},
    "/admin/api/operators": {"username": "", "role": "viewer", "password": ""},
}


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
async def test_every_route_answers_each_role_as_the_matrix_says(site: Site, role: Role) -> None:
    session, csrf = await signed_in(site, role)
    refused: list[str] = []
    for method, template, permission, _ in ROUTES:
        url = site.live.url + _path(template)
        async with session.request(method, url, json=BODIES.get(template, {}),
                                   headers={"X-CSRF-Token": csrf}) as r:
            text = await r.text()
            expect_allowed = permission is None or allowed(role, permission)
            if expect_allowed:
                assert r.status not in (401, 403), (method, template, r.status, text)
            else:
                assert (r.status, json.loads(text)["error"]) == (403, "forbidden"), (method, template, text)
                refused.append(f"permission:{permission.value}" if permission else "")
    # Every refusal is in the audit log under the operator's name (annex 2: traceability).
    name = site.people[role].username
    denied = [e["object_id"] for e in await read_audit(site) if e["action"] == "access.denied" and e["actor"] == name]
    assert sorted(denied) == sorted(refused)


async def read_audit(site: Site) -> list[dict[str, str]]:
    """The audit log as the store holds it (read directly, so reading it adds no entry)."""
    store = await open_store(ServeConfig(data_dir=site.data_dir))
    try:
        return [json.loads(audit.entry_to_json(e)) for e in await store.audit_entries()]
    finally:
        await store.close()


async def test_every_route_needs_a_signed_in_operator(site: Site) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as anonymous:
        for method, template, _, _ in ROUTES:
            async with anonymous.request(method, site.live.url + _path(template), json={}) as r:
                assert r.status == 401, (method, template)
                assert (await r.json())["error"] == "not-signed-in"


async def test_unsafe_methods_need_the_csrf_token_and_our_origin(site: Site) -> None:
    session, csrf = await signed_in(site, Role.ADMIN)
    for method, template, _, _ in ROUTES:
        if method == "GET":
            continue
        url = site.live.url + _path(template)
        async with session.request(method, url, json={}) as r:
            assert (r.status, (await r.json())["error"]) == (403, "csrf"), (method, template)
        async with session.request(method, url, json={}, headers={"X-CSRF-Token": csrf + "x"}) as r:
            assert (r.status, (await r.json())["error"]) == (403, "csrf"), (method, template)
        async with session.request(method, url, json={},
                                   headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}) as r:
            assert (r.status, (await r.json())["error"]) == (403, "bad-origin"), (method, template)


async def test_the_session_cookie_is_secure_httponly_strict_and_scoped(site: Site) -> None:
    person = site.people[Role.AUDITOR]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client, client.post(
        f"{site.live.url}/admin/api/session",
        json={"username": person.username, "password": PASSWORD, "code": person.code()},
    ) as r:
        assert r.status == 200
        header = r.headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"secure", "httponly", "samesite", "path"} <= attributes
    assert re.search(r"SameSite=Strict", header) and re.search(r"Path=/admin(;|$)", header)


async def test_wrong_passwords_and_codes_fail_alike_then_lock_the_account(site: Site) -> None:
    person = site.people[Role.VIEWER]
    url = f"{site.live.url}/admin/api/session"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client:
        answers = []
        for body in ({"username": person.username, "password": "wrong-password-123", "code": person.code()},
                     {"username": person.username, "password": PASSWORD, "code": "000000"},
                     {"username": "no-such-user", "password": PASSWORD, "code": "123456"}):
            async with client.post(url, json=body) as r:
                answers.append((r.status, await r.json()))
        assert len({json.dumps(a, sort_keys=True) for a in answers}) == 1  # nothing says which part was wrong
        assert answers[0][0] == 401
        for _ in range(3):  # five failures for this account lock it ...
            async with client.post(url, json={"username": person.username, "password": "x" * 12, "code": "1"}) as r:
                pass
        async with client.post(url, json={"username": person.username, "password": PASSWORD,  # ... even the right one
                                          "code": person.code()}) as r:
            body = await r.json()
            assert r.status == 429 and body["error"] == "locked" and body["retry_after"] > 0


async def test_a_code_signs_in_once(site: Site) -> None:
    person = site.people[Role.PRIVACY_OFFICER]
    code = person.code()
    url = f"{site.live.url}/admin/api/session"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client:
        async with client.post(url, json={"username": person.username, "password": PASSWORD, "code": code}) as r:
            assert r.status == 200
        async with client.post(url, json={"username": person.username, "password": PASSWORD, "code": code}) as r:
            assert r.status == 401


async def test_disabling_an_operator_ends_their_session_at_once(site: Site) -> None:
    admin, admin_csrf = await signed_in(site, Role.ADMIN)
    auditor, _ = await signed_in(site, Role.AUDITOR)
    async with auditor.get(f"{site.live.url}/admin/api/me") as r:
        assert r.status == 200 and (await r.json())["role"] == "auditor"
    name = site.people[Role.AUDITOR].username
    async with admin.patch(f"{site.live.url}/admin/api/operators/{name}", json={"disabled": True},
                           headers={"X-CSRF-Token": admin_csrf}) as r:
        assert r.status == 200
    async with auditor.get(f"{site.live.url}/admin/api/me") as r:
        assert r.status == 401
    async with admin.patch(f"{site.live.url}/admin/api/operators/{name}", json={"disabled": False},
                           headers={"X-CSRF-Token": admin_csrf}) as r:
        assert r.status == 200
    site.signed_in.pop(Role.AUDITOR)
    await auditor.close()


async def test_a_privacy_officer_answers_an_access_request_then_erases(site: Site) -> None:
    room = await create_room(site.live.url)
    person = await Participant().connect(site.live.url)
    try:
        assert (await person.join(room, "Anna de Vries"))["ok"]
    finally:
        await person.close()
    officer, csrf = await signed_in(site, Role.PRIVACY_OFFICER)
    base = f"{site.live.url}/admin/api/subjects"
    ask = {"controller": DEFAULT_CONTROLLER, "by": "name", "value": "anna  DE vries"}
    async with officer.post(f"{base}/requests", json={**ask, "kind": "access"},
                            headers={"X-CSRF-Token": csrf}) as r:
        answer = await r.json()
        assert r.status == 201, answer
    jsonschema.validate(answer["export"], SUBJECT_EXPORT_SCHEMA)
    [row] = answer["export"]["sessions"]
    assert (row["room_id"], row["name"], row["ip"]) == (room, "Anna de Vries", "127.0.0.1")
    assert answer["report"]["on_time"] and answer["report"]["session_ids"] == [row["id"]]
    async with officer.post(f"{base}/requests", json={**ask, "kind": "erase"},
                            headers={"X-CSRF-Token": csrf}) as r:
        assert r.status == 201 and (await r.json())["report"]["outcome"]["sessions_erased"] == 1
    async with officer.post(f"{base}/search", json=ask, headers={"X-CSRF-Token": csrf}) as r:
        assert (await r.json())["sessions"] == []
    async with officer.get(f"{site.live.url}/admin/api/audit") as r:
        log = await r.text()
    actions = [json.loads(line)["action"] for line in log.splitlines()]
    assert {"operator.login", "subject.search", "subject.export", "subject.erase"} <= set(actions)
    assert "Anna" not in log and "127.0.0.1" not in log


async def test_metrics_flag_an_overdue_breach(site: Site) -> None:
    writer, csrf = await signed_in(site, Role.PRIVACY_OFFICER)
    discovered = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=49)).isoformat()
    async with writer.put(f"{site.live.url}/admin/api/breaches/2026-001",
                          json={"discovered_at": discovered, "summary": "a laptop was lost",
                                "affected": [{"controller_id": DEFAULT_CONTROLLER}]},
                          headers={"X-CSRF-Token": csrf}) as r:
        body = await r.json()
        assert r.status == 200, body
        assert body["missing"]  # not complete: it cannot be marked notified yet
    async with writer.post(f"{site.live.url}/admin/api/breaches/2026-001/notify",
                           json={"controller": DEFAULT_CONTROLLER}, headers={"X-CSRF-Token": csrf}) as r:
        assert r.status == 422 and (await r.json())["missing"]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client, client.get(
        f"{site.live.url}/metrics"
    ) as r:
        text = await r.text()
    assert re.search(r"^kijkmee_breaches_overdue 1$", text, re.M), text


async def test_an_admin_writes_an_encrypted_backup_through_the_api(site: Site) -> None:
    session, csrf = await signed_in(site, Role.ADMIN)
    async with session.post(f"{site.live.url}/admin/api/backups", headers={"X-CSRF-Token": csrf}) as r:
        body = await r.json()
        assert r.status == 201, body
    path = site.data_dir / "backups" / body["file"]
    assert path.stat().st_mode & 0o777 == 0o600
    header, _ = read_backup(path, KeyStore(default_key_folder(site.data_dir)))
    assert header["counts"] == body["rows"] and header["counts"]["operators"] == len(Role)
