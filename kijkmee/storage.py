"""Opening the metadata store from the config, and the data-handling jobs `serve` runs on a schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from kijkmee.config import ServeConfig
from metadata_store import register
from metadata_store.crypto import KeyStore
from metadata_store.postgres import PgDb, PostgresStore
from metadata_store.sql import SqlStore, retention_cutoff
from metadata_store.sqlite import SQLiteStore
from metadata_store.store import DEFAULT_CONTROLLER, RetentionResult

log = logging.getLogger("kijkmee.jobs")


def processor_info(config: ServeConfig) -> register.ProcessorInfo:
    """The processor as the register of processing and breach notifications name it (from the config)."""
    return register.ProcessorInfo(
        name=config.processor_name, address=config.processor_address, registration=config.processor_registration,
        contact=register.ContactPoint(name="Privacy contact", function="privacy", email=config.privacy_contact),
    )


def register_settings(config: ServeConfig) -> register.RegisterSettings:
    """What the register of processing states about this installation: the measures kijkmee itself
    implements (each tested), the configured retention and sub-processors. Organisational measures
    (data-centre certificates, 24x7 monitoring) are not claimed: nothing here can know them."""
    return register.RegisterSettings(
        retention_days=config.retention_days, encryption_at_rest_per_controller_keys=True,
        offboarding_deletion=True, audit_log=True, operator_2fa=True, operator_password_policy=True,
        operator_roles=True, login_lockout=True, backups_tested=True, subprocessors=config.subprocessors(),
    )


async def open_store(config: ServeConfig) -> SqlStore:
    """The store `config` names (PostgreSQL when database_url is set, else SQLite in data_dir), with
    its key folder, migrated, and with the default controller in place."""
    keys = KeyStore(config.keys_folder())
    store: SqlStore
    if config.database_url:
        store = await PostgresStore.open(config.database_url, keys)
    else:
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = await SQLiteStore.open(config.data_dir / "kijkmee.sqlite3", keys)
    try:
        await store.ensure_controller(DEFAULT_CONTROLLER, "Default", dt.datetime.now(dt.UTC))
    except BaseException:
        await store.close()
        raise
    return store


@dataclass(frozen=True)
class JobsResult:
    retention: RetentionResult
    deleted_controllers: list[str]


async def run_jobs(store: SqlStore, retention_days: int, now: dt.datetime) -> JobsResult:
    """One round of the scheduled jobs: anonymise old sessions, delete controllers whose grace ended."""
    result = await store.anonymise(retention_cutoff(now, retention_days), now)
    deleted = await store.purge_controllers(now)
    return JobsResult(result, deleted)


JOBS_LOCK_KEY = 0x6B696A6B6D6A6F62  # "kijkmjob": the advisory lock of a round of the scheduled jobs


@asynccontextmanager
async def cluster_turn(store: SqlStore) -> AsyncIterator[bool]:
    """Whether this node runs the current round of the jobs, for as long as the block lasts.

    On PostgreSQL every node shares the database, so the round is taken under an advisory lock: one
    node at a time runs it, a node that finds the lock taken skips the round (the jobs are idempotent,
    so a round soon after another finds nothing left to do). SQLite is one node's own: always its turn."""
    db = store.db
    if not isinstance(db, PgDb):
        yield True
        return
    async with db.try_lock(JOBS_LOCK_KEY) as mine:
        yield mine


async def run_round(store: SqlStore, retention_days: int, now: dt.datetime) -> JobsResult | None:
    """One round of the jobs if it is this node's turn; None when another node is running one."""
    async with cluster_turn(store) as mine:
        if not mine:
            return None
        return await run_jobs(store, retention_days, now)


async def jobs_loop(
    store: SqlStore, retention_days: int, interval: dt.timedelta, clock: Callable[[], dt.datetime]
) -> None:
    """Run the jobs now and then every `interval` until cancelled, once cluster-wide at a time (see
    cluster_turn). A failed round is logged (type only) and retried at the next interval; it never
    stops serving."""
    while True:
        try:
            done = await run_round(store, retention_days, clock())
            if done is None:
                log.debug("data-handling jobs: another node runs this round")
            elif done.retention.anonymised or done.deleted_controllers:
                log.info(
                    "data-handling jobs ran",
                    extra={"anonymised": done.retention.anonymised,
                           "controllers_deleted": len(done.deleted_controllers)},
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep serving; the next round tries again
            log.error("data-handling jobs failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(interval.total_seconds())
