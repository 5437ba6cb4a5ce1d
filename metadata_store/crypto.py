"""Per-controller data keys: AES-256-GCM for IPs and typed values at rest, keyed hashes for lookups.

Every controller has one random 256-bit key in a `KeyStore`, a folder kept apart from the data (by
default `<data folder>/keys`, configurable so ops can put it on another volume) and never copied into
a backup. Each personal value is stored as ``version || nonce || ciphertext+tag``, with the controller,
table and column as associated data, so a value cannot be moved to another column or controller
unnoticed. Lookups (a data-subject request for "Anna" or 192.0.2.7) use a blind index: HMAC-SHA256 of
the normalised value under a key derived from the controller's key, so the database never needs the
plaintext to find a row.

Destroying a controller's key (offboarding) makes every copy of its data unreadable, backups included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
CONTROLLER_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SERVICE_KEY_ID = "_service"
"""The key for the processor's own secrets (operators' TOTP seeds), not any controller's."""
BACKUP_KEY_ID = "_backup"
"""The key backups are encrypted with (metadata_store.backup); never itself in a backup."""
RESERVED_KEY_IDS = frozenset({SERVICE_KEY_ID, BACKUP_KEY_ID})


class MissingKey(LookupError):
    """A key is missing or was destroyed: the data it protected cannot be read any more."""


class CryptoError(ValueError):
    """A stored value failed authentication: damaged, or moved from another column or controller."""


def default_key_folder(data_folder: Path) -> Path:
    """Where keys go when no key folder is configured: beside the data folder, not inside it
    (`kijkmee-data` -> `kijkmee-data-keys`), so copying the data folder never copies the keys."""
    absolute = data_folder.absolute()
    return absolute.parent / f"{absolute.name}-keys"


def check_controller_id(controller_id: str) -> str:
    if controller_id not in RESERVED_KEY_IDS and CONTROLLER_ID_RE.fullmatch(controller_id) is None:
        raise ValueError("a controller id is 1 to 63 lowercase letters, digits or dashes, not starting with a dash")
    return controller_id


# --- normalisation for the blind index --------------------------------------------------------------


def normalise_name(value: str) -> str:
    """"  Anna  de  Vries " and "anna de vries" find each other; accents stay (Ånna is not Anna).
    The Turkish dotless i (U+0131) counts as i, so "Y\u0131lmaz", "YILMAZ" and "Yilmaz" find each other
    (case folding alone turns I into i, never into the dotless one)."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().replace(DOTLESS_I, "i").split())


DOTLESS_I = "\u0131"


def normalise_email(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip().casefold()


def normalise_phone(value: str, default_country: str = "31") -> str:
    """Digits only, in international form: "06-1234 5678", "0031 6 12345678" and "+31612345678" match.

    A number that starts with a single 0 is read as a Dutch national number (kijkmee's users are Dutch)."""
    text = unicodedata.normalize("NFKC", value).strip()
    plus = text.startswith("+")
    digits = "".join(ch for ch in text if ch.isdigit())
    if plus:
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if digits.startswith("0"):
        return "+" + default_country + digits[1:]
    return digits


def normalise_ip(value: str) -> str:
    """The canonical text of an address; an IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        address = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        raise ValueError("not an IP address") from None  # without the value: messages may reach a log
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


NORMALISERS = {
    "ip": normalise_ip,
    "name": normalise_name,
    "phone": normalise_phone,
    "email": normalise_email,
}
"""Kind of value -> normaliser; the kinds are the personal columns of `sessions`."""


# --- keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    """One controller's key, with what is derived from it."""

    controller_id: str
    key: bytes

    def _aad(self, table: str, column: str) -> bytes:
        return f"kijkmee/v{FORMAT_VERSION}/{self.controller_id}/{table}.{column}".encode()

    def encrypt(self, table: str, column: str, value: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8"), self._aad(table, column))
        return bytes([FORMAT_VERSION]) + nonce + sealed

    def decrypt(self, table: str, column: str, blob: bytes) -> str:
        blob = bytes(blob)
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != FORMAT_VERSION:
            raise CryptoError(f"{table}.{column}: not a kijkmee ciphertext")
        try:
            plain = self._aead.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], self._aad(table, column))
        except Exception as exc:  # cryptography's InvalidTag
            raise CryptoError(f"{table}.{column}: value failed authentication") from exc
        return plain.decode("utf-8")

    @cached_property
    def _aead(self) -> AESGCM:
        return AESGCM(self.key)

    @cached_property
    def index_key(self) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"kijkmee blind index v1"
        ).derive(self.key)

    def blind_index(self, kind: str, value: str) -> str:
        """Keyed hash of the normalised value: equal for equal values of this controller, and nothing
        else can be learnt from it without the key."""
        normalised = NORMALISERS[kind](value)
        digest = hmac.new(self.index_key, kind.encode() + b"\x00" + normalised.encode("utf-8"), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:20]).decode().rstrip("=")


class KeyStore:
    """A folder of key files, one per controller, readable by the owner only.

    Keys are cached in memory once read. `destroy` overwrites the file before unlinking it; on
    copy-on-write or flash storage an overwrite may not reach the old blocks, so put the folder on
    storage you can trust with that, or on an encrypted volume (README, "data handling").
    """

    RECHECK_SECONDS = 5.0
    """A cached key is trusted this long; then the file is looked at again, so a key another node
    destroyed (offboarding) stops working here within seconds, not at the next restart."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[str, DataKey] = {}
        self._checked: dict[str, float] = {}

    def _path(self, controller_id: str) -> Path:
        return self.folder / f"{check_controller_id(controller_id)}.key"

    def _ensure_folder(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)

    def create(self, controller_id: str) -> DataKey:
        """Make a new key; an existing key is kept (creating twice is harmless)."""
        self._ensure_folder()
        path = self._path(controller_id)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.get(controller_id)
        try:
            os.write(fd, base64.b64encode(key) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.folder)
        data_key = DataKey(controller_id, key)
        self._cache[controller_id] = data_key
        self._checked[controller_id] = time.monotonic()
        return data_key

    def get(self, controller_id: str) -> DataKey:
        cached = self._cache.get(controller_id)
        now = time.monotonic()
        if cached is not None:
            if now - self._checked.get(controller_id, 0.0) < self.RECHECK_SECONDS:
                return cached
            if self._path(controller_id).exists():
                self._checked[controller_id] = now
                return cached
            self._cache.pop(controller_id, None)
        path = self._path(controller_id)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise MissingKey(f"no data key for controller {controller_id!r} in {self.folder}") from None
        key = base64.b64decode(text.strip(), validate=True)
        if len(key) != KEY_BYTES:
            raise MissingKey(f"the key file for controller {controller_id!r} is damaged")
        data_key = DataKey(controller_id, key)
        self._cache[controller_id] = data_key
        self._checked[controller_id] = now
        return data_key

    def exists(self, controller_id: str) -> bool:
        return self._path(controller_id).exists()

    def destroy(self, controller_id: str) -> bool:
        """Overwrite and remove the key. Returns False when there was none."""
        self._cache.pop(controller_id, None)
        path = self._path(controller_id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return False
        with open(path, "r+b") as handle:
            handle.write(secrets.token_bytes(max(size, 64)))
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()
        _fsync_dir(self.folder)
        return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
