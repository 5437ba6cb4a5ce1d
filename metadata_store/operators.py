"""Operator accounts: password policy, scrypt hashes, TOTP, roles and lockout (annex 2, item 2).

Annex 2 promises an authorisation matrix, a password policy, two-factor authentication and fail2ban-style
lockout. Each is pure code here: salts, TOTP secrets and `now` are passed in, nothing reads a clock or
draws random bytes. The one read is the shipped list of common passwords (package data, loaded once).

The common-password list is Django's (BSD-3-Clause; 19,640 passwords compiled by Royce Williams,
lowercased), plus Dutch words, keyboard walks and season/year patterns added for kijkmee.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import ipaddress
import re
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from urllib.parse import quote, urlencode


class OperatorError(ValueError):
    """A credential parameter the caller got wrong: short salt, unknown algorithm, bad base32."""


# --- password policy -----------------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
_MIN_STRIPPED_CORE = 3
"""A common word must keep at least this many characters after digits and symbols are stripped."""


class PasswordProblem(enum.Enum):
    """Why a password is refused. The value is a stable code for APIs and translations."""

    TOO_SHORT = "too-short"
    TOO_LONG = "too-long"
    COMMON = "common"
    CONTAINS_USER_NAME = "contains-user-name"
    DIGITS_ONLY = "digits-only"
    REPETITIVE = "repetitive"
    SEQUENTIAL = "sequential"


MESSAGES: Mapping[str, Mapping[PasswordProblem, str]] = MappingProxyType({
    "en": MappingProxyType({
        PasswordProblem.TOO_SHORT: f"Use at least {MIN_PASSWORD_LENGTH} characters.",
        PasswordProblem.TOO_LONG: f"Use at most {MAX_PASSWORD_LENGTH} characters.",
        PasswordProblem.COMMON: "This password is too common: it is on lists that attackers try first.",
        PasswordProblem.CONTAINS_USER_NAME: "Do not put your user name in your password.",
        PasswordProblem.DIGITS_ONLY: "Do not use digits only: add letters or words.",
        PasswordProblem.REPETITIVE: "Do not repeat one character or a short pattern.",
        PasswordProblem.SEQUENTIAL: "Do not use runs like abcd, 1234 or keyboard rows like qwerty.",
    }),
    "nl": MappingProxyType({
        PasswordProblem.TOO_SHORT: f"Gebruik minstens {MIN_PASSWORD_LENGTH} tekens.",
        PasswordProblem.TOO_LONG: f"Gebruik hoogstens {MAX_PASSWORD_LENGTH} tekens.",
        PasswordProblem.COMMON: "Dit wachtwoord komt te vaak voor: het staat op lijsten die aanvallers eerst proberen.",
        PasswordProblem.CONTAINS_USER_NAME: "Zet je gebruikersnaam niet in je wachtwoord.",
        PasswordProblem.DIGITS_ONLY: "Gebruik niet alleen cijfers: voeg letters of woorden toe.",
        PasswordProblem.REPETITIVE: "Herhaal niet één teken of een kort patroon.",
        PasswordProblem.SEQUENTIAL: "Gebruik geen reeksen zoals abcd, 1234 of toetsenbordrijen zoals qwerty.",
    }),
})
"""Plain-language messages per language code, one per problem."""

_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz", "01234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm", "qwertzuiop",
    "yxcvbnm", "azertyuiop", "qsdfghjklm", "wxcvbn", "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "qazwsxedcrfvtgbyhnujmikolp", "1q2w3e4r5t6y7u8i9o0p", "q1w2e3r4t5y6u7i8o9p0", "zaq1xsw2cde3vfr4bgt5nhy6mju7",
    "!@#$%^&*()",
)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_TRAILING_NON_LETTERS = re.compile(r"[\W\d_]+$")
_LEADING_NON_LETTERS = re.compile(r"^[\W\d_]+")


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lowercased (read from package data once)."""
    text = resources.files("metadata_store").joinpath("data", "common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip())


@functools.cache
def _sequence_runs() -> frozenset[str]:
    runs: set[str] = set()
    for sequence in _SEQUENCES:
        for text in (sequence, sequence[::-1]):
            runs.update(text[i:j] for i in range(len(text)) for j in range(i + 3, len(text) + 1))
    return frozenset(runs)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _common_candidates(folded: str) -> set[str]:
    """The password and its cores with trailing (or surrounding) digits and symbols removed, each also
    with common letter substitutions undone (p4ssw0rd -> password)."""
    tail = _TRAILING_NON_LETTERS.sub("", folded)
    both = _LEADING_NON_LETTERS.sub("", tail)
    cores = {folded} | {core for core in (tail, both) if len(core) >= _MIN_STRIPPED_CORE}
    return cores | {core.translate(_LEET) for core in cores}


def _is_repetitive(folded: str) -> bool:
    """Fewer than 4 distinct characters, or a unit repeated: short (up to 6) twice, any three times."""
    if len(set(folded)) < 4:
        return True
    for period in range(1, len(folded) // 2 + 1):
        copies, rest = divmod(len(folded), period)
        if rest == 0 and folded == folded[:period] * copies and (period <= 6 or copies >= 3):
            return True
    return False


def _is_sequential(folded: str) -> bool:
    """Made entirely of runs of 3 or more from the alphabet, digits or a keyboard row, either direction."""
    runs, longest = _sequence_runs(), max(len(s) for s in _SEQUENCES)
    reachable = [True] + [False] * len(folded)
    for end in range(3, len(folded) + 1):
        reachable[end] = any(
            reachable[start] and folded[start:end] in runs for start in range(max(0, end - longest), end - 2)
        )
    return reachable[len(folded)]


def password_problems(
    password: str, user_name: str, common: Collection[str] | None = None
) -> list[PasswordProblem]:
    """Every rule `password` breaks, in a fixed order; empty when it is acceptable.

    Length counts characters after NFKC normalisation. The common-list match ignores case, trailing or
    surrounding digits and symbols, and leetspeak; a `common` list given instead must be lowercase. The
    pattern rules (digits only, repetition, runs) only apply within the length limits, so a short password
    gets one clear message and a huge one costs no work.
    """
    normalised = _normalise(password)
    length, folded = len(normalised), normalised.casefold()
    common_set = common_passwords() if common is None else common
    user = _normalise(user_name).casefold()
    checks: list[tuple[PasswordProblem, bool]] = [
        (PasswordProblem.TOO_SHORT, length < MIN_PASSWORD_LENGTH),
        (PasswordProblem.TOO_LONG, length > MAX_PASSWORD_LENGTH),
        (PasswordProblem.COMMON, any(c in common_set for c in _common_candidates(folded))),
        (PasswordProblem.CONTAINS_USER_NAME, len(user) >= 3 and user in folded),
    ]
    if MIN_PASSWORD_LENGTH <= length <= MAX_PASSWORD_LENGTH:
        checks += [
            (PasswordProblem.DIGITS_ONLY, folded.isdecimal()),
            (PasswordProblem.REPETITIVE, _is_repetitive(folded)),
            (PasswordProblem.SEQUENTIAL, _is_sequential(folded)),
        ]
    return [problem for problem, broken in checks if broken]


def check_password(
    password: str, user_name: str, language: str = "en", common: Collection[str] | None = None
) -> list[str]:
    """`password_problems` as plain sentences in `language` ("en" or "nl"); empty when acceptable."""
    if language not in MESSAGES:
        raise OperatorError("language must be one of: " + ", ".join(MESSAGES))
    return [MESSAGES[language][problem] for problem in password_problems(password, user_name, common)]


# --- scrypt password hashes ----------------------------------------------------------------------

MIN_SALT_BYTES = 16
HASH_BYTES = 32
_SCRYPT_FORMAT = re.compile(r"scrypt\$n=2\*\*(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters (RFC 7914). Memory use is 128 * r * 2**log2_n bytes."""

    log2_n: int
    """CPU and memory cost: N = 2**log2_n."""
    r: int
    """Block size."""
    p: int
    """Parallelism."""

    def __post_init__(self) -> None:
        if not (10 <= self.log2_n <= 20 and 1 <= self.r <= 32 and 1 <= self.p <= 16):
            raise OperatorError("scrypt parameters out of range: log2_n 10-20, r 1-32, p 1-16")
        if self.memory > 256 * 1024 * 1024:
            raise OperatorError("scrypt parameters would need more than 256 MiB")

    @property
    def memory(self) -> int:
        """Bytes OpenSSL needs for these parameters (what `maxmem` must allow)."""
        return 128 * self.r * ((1 << self.log2_n) + 2 + self.p)


DEFAULT_SCRYPT = ScryptParams(log2_n=14, r=8, p=1)
"""About 50 ms and 16 MiB per hash on our 2-core machines. Raise it here; `needs_rehash` does the rest."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        _normalise(password).encode(), salt=salt, n=1 << params.log2_n, r=params.r, p=params.p,
        maxmem=params.memory + 1024 * 1024, dklen=HASH_BYTES,
    )


def hash_password(password: str, salt: bytes, params: ScryptParams = DEFAULT_SCRYPT) -> str:
    """``scrypt$n=2**14,r=8,p=1$<salt>$<hash>`` (base64 without padding). `salt`: at least 16 random bytes."""
    if len(salt) < MIN_SALT_BYTES:
        raise OperatorError(f"salt must be at least {MIN_SALT_BYTES} random bytes")
    digest = _scrypt(password, salt, params)
    return f"scrypt$n=2**{params.log2_n},r={params.r},p={params.p}${_b64(salt)}${_b64(digest)}"


def parse_password_hash(stored: str) -> tuple[ScryptParams, bytes, bytes]:
    """Parameters, salt and hash of a stored value; `OperatorError` if it is not one `hash_password` wrote."""
    match = _SCRYPT_FORMAT.fullmatch(stored) if isinstance(stored, str) else None
    if match is None:
        raise OperatorError("not a kijkmee scrypt hash")
    try:
        params = ScryptParams(int(match[1]), int(match[2]), int(match[3]))
        return params, _unb64(match[4]), _unb64(match[5])
    except ValueError as exc:
        raise OperatorError("not a kijkmee scrypt hash") from exc


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored`; False too for a malformed or out-of-range stored value."""
    try:
        params, salt, expected = parse_password_hash(stored)
    except OperatorError:
        return False
    if len(salt) < MIN_SALT_BYTES or len(expected) != HASH_BYTES:
        return False
    return hmac.compare_digest(_scrypt(password, salt, params), expected)


def needs_rehash(stored: str, params: ScryptParams = DEFAULT_SCRYPT) -> bool:
    """True when `stored` was made with other parameters (or is unreadable): hash again at next login."""
    try:
        found, salt, digest = parse_password_hash(stored)
    except OperatorError:
        return True
    return found != params or len(salt) < MIN_SALT_BYTES or len(digest) != HASH_BYTES


# --- TOTP (RFC 6238) on HOTP (RFC 4226) ----------------------------------------------------------

TOTP_SECRET_BYTES = 20
"""Secret length to draw (160 bits, RFC 4226 section 4)."""
_ALGORITHMS = ("sha1", "sha256", "sha512")


def hotp(secret: bytes, counter: int, digits: int = 6, algorithm: str = "sha1") -> str:
    """RFC 4226 one-time password for `counter`, zero-padded to `digits` (6 to 10)."""
    if algorithm not in _ALGORITHMS:
        raise OperatorError("algorithm must be one of: " + ", ".join(_ALGORITHMS))
    if not 6 <= digits <= 10:
        raise OperatorError("digits must be 6 to 10")
    if not 0 <= counter < 2**64:
        raise OperatorError("counter must fit in 64 bits")
    mac = hmac.new(secret, counter.to_bytes(8, "big"), algorithm).digest()
    offset = mac[-1] & 0x0F
    code = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def totp_step(now: float, step: int = 30) -> int:
    """The RFC 6238 time step T for Unix time `now` (T0 = 0)."""
    if step < 1 or now < 0:
        raise OperatorError("step must be positive and now not before 1970")
    return int(now // step)


def totp(secret: bytes, now: float, digits: int = 6, step: int = 30, algorithm: str = "sha1") -> str:
    """RFC 6238 code at Unix time `now`."""
    return hotp(secret, totp_step(now, step), digits, algorithm)


def verify_totp(
    secret: bytes, code: str, now: float, window: int = 1, last_used_step: int | None = None,
    digits: int = 6, step: int = 30, algorithm: str = "sha1",
) -> int | None:
    """The time step whose code equals `code`, within `window` steps of now, or None.

    Steps at or before `last_used_step` never match: store the returned step and pass it next time, so a
    code (seen over a shoulder, or replayed) works once. Spaces in `code` are ignored, and full-width
    digits (some phone keyboards) count as digits.
    """
    typed = _normalise(code).replace(" ", "")
    if len(typed) != digits or not (typed.isascii() and typed.isdigit()):
        return None
    current = totp_step(now, step)
    matched: int | None = None
    for candidate in range(max(0, current - window), current + window + 1):
        fresh = last_used_step is None or candidate > last_used_step
        if hmac.compare_digest(hotp(secret, candidate, digits, algorithm), typed) and fresh and matched is None:
            matched = candidate
    return matched


def secret_to_base32(secret: bytes) -> str:
    """The form authenticator apps take: RFC 4648 base32, upper case, no padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def secret_from_base32(text: str) -> bytes:
    """Read a base32 secret as people type it: any case, spaces and hyphens ignored, padding optional."""
    cleaned = re.sub(r"[\s-]", "", text).upper().rstrip("=")
    try:
        return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except ValueError as exc:
        raise OperatorError("not a base32 secret") from exc


def provisioning_uri(
    secret: bytes, account: str, issuer: str = "kijkmee", digits: int = 6, step: int = 30, algorithm: str = "sha1"
) -> str:
    """An ``otpauth://totp/`` URI (Google Authenticator key URI format) to show as a QR code."""
    if len(secret) < 16:
        raise OperatorError("a TOTP secret must be at least 16 bytes (20 recommended)")
    if ":" in issuer or ":" in account:
        raise OperatorError("issuer and account must not contain ':'")
    if algorithm not in _ALGORITHMS:
        raise OperatorError("algorithm must be one of: " + ", ".join(_ALGORITHMS))
    query = urlencode(
        {"secret": secret_to_base32(secret), "issuer": issuer, "algorithm": algorithm.upper(),
         "digits": digits, "period": step},
        quote_via=quote,
    )
    return f"otpauth://totp/{quote(issuer, safe='')}:{quote(account, safe='')}?{query}"


# --- roles and the authorisation matrix ----------------------------------------------------------


class Role(enum.Enum):
    """What an operator is for. One role per account; separate duties get separate accounts."""

    VIEWER = "viewer"
    PRIVACY_OFFICER = "privacy_officer"
    ADMIN = "admin"
    AUDITOR = "auditor"


class Permission(enum.Enum):
    """One thing an operator can do through `kijkmee admin` or the admin API."""

    SESSIONS_READ = "sessions.read"
    SUBJECTS_SEARCH = "subjects.search"
    SUBJECTS_EXPORT = "subjects.export"
    SUBJECTS_RECTIFY = "subjects.rectify"
    SUBJECTS_ERASE = "subjects.erase"
    SUBJECTS_RESTRICT = "subjects.restrict"
    CONTROLLERS_EXPORT = "controllers.export"
    CONTROLLERS_OFFBOARD = "controllers.offboard"
    BREACHES_READ = "breaches.read"
    BREACHES_WRITE = "breaches.write"
    BREACHES_NOTIFY = "breaches.notify"
    REGISTER_READ = "register.read"
    AUDIT_READ = "audit.read"
    AUDIT_VERIFY = "audit.verify"
    OPERATORS_MANAGE = "operators.manage"
    RETENTION_RUN = "retention.run"
    BACKUP_RUN = "backup.run"
    BACKUP_RESTORE = "backup.restore"


_P = Permission
MATRIX: Mapping[Role, frozenset[Permission]] = MappingProxyType({
    # Support staff: look at session rows (IP, typed name) to help with a call; every read is audited.
    Role.VIEWER: frozenset({_P.SESSIONS_READ, _P.REGISTER_READ}),
    # The only role that handles personal data on request: data-subject rights, controller export, breaches.
    Role.PRIVACY_OFFICER: frozenset({
        _P.SESSIONS_READ, _P.SUBJECTS_SEARCH, _P.SUBJECTS_EXPORT, _P.SUBJECTS_RECTIFY, _P.SUBJECTS_ERASE,
        _P.SUBJECTS_RESTRICT, _P.CONTROLLERS_EXPORT, _P.BREACHES_READ, _P.BREACHES_WRITE, _P.BREACHES_NOTIFY,
        _P.REGISTER_READ, _P.AUDIT_READ, _P.AUDIT_VERIFY,
    }),
    # Runs the service and its accounts, but reads no personal data.
    Role.ADMIN: frozenset({
        _P.CONTROLLERS_OFFBOARD, _P.BREACHES_READ, _P.BREACHES_WRITE, _P.REGISTER_READ, _P.AUDIT_VERIFY,
        _P.OPERATORS_MANAGE, _P.RETENTION_RUN, _P.BACKUP_RUN, _P.BACKUP_RESTORE,
    }),
    # Checks that the promises are kept; sees no personal data (the audit log holds only ids).
    Role.AUDITOR: frozenset({_P.BREACHES_READ, _P.REGISTER_READ, _P.AUDIT_READ, _P.AUDIT_VERIFY}),
})
"""Which role may do what. Least privilege; a change here is a change to the test that spells it out."""


def allowed(role: Role, permission: Permission) -> bool:
    """True when `role` holds `permission` in `MATRIX`."""
    return permission in MATRIX.get(role, frozenset())


# --- lockout -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """When failures lock a key (an account or a source) out, and how many keys are remembered."""

    max_failures: int
    """This many failures within `window` lock the key."""
    window: float
    """Seconds over which failures are counted."""
    lock: float
    """Seconds the lock lasts."""
    capacity: int
    """Keys remembered at most; the least recently failed is forgotten first."""

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= 0 or self.lock <= 0 or self.capacity < 1:
            raise OperatorError("lockout thresholds must be positive")


@dataclass(frozen=True)
class LockoutPolicy:
    """fail2ban-style limits for operator logins (annex 2)."""

    account: Threshold = Threshold(max_failures=5, window=15 * 60, lock=15 * 60, capacity=10_000)
    """Per account name (case-insensitive), whether or not the account exists."""
    source: Threshold = Threshold(max_failures=20, window=60 * 60, lock=60 * 60, capacity=10_000)
    """Per source address (IPv6 per /64)."""


class LockScope(enum.Enum):
    """What a lock applies to."""

    ACCOUNT = "account"
    SOURCE = "source"


@dataclass(frozen=True)
class LockedOut:
    """A refusal: no password is checked until `until`."""

    until: float
    """When the lock ends, on the same clock as the `now` passed in."""
    scope: LockScope
    """Whether the account or the source is locked."""


def source_key(source: str) -> str:
    """How a source is counted: an IPv4 address as is, IPv4-mapped IPv6 as IPv4, other IPv6 by /64 (one
    customer usually holds a whole /64). Anything else is used as given."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Tracker:
    failures: deque[float]
    locked_until: float | None = None


@dataclass
class _Counter:
    """Failures and locks for one scope, least recently failed first."""

    threshold: Threshold
    entries: OrderedDict[str, _Tracker] = field(default_factory=OrderedDict)

    def locked_until(self, key: str, now: float) -> float | None:
        tracker = self.entries.get(key)
        if tracker is None or tracker.locked_until is None or now >= tracker.locked_until:
            return None
        return tracker.locked_until

    def fail(self, key: str, now: float) -> None:
        tracker = self.entries.get(key)
        if tracker is None:
            tracker = self.entries[key] = _Tracker(deque(maxlen=self.threshold.max_failures))
        self.entries.move_to_end(key)
        if self.locked_until(key, now) is not None:
            return
        tracker.locked_until = None
        while tracker.failures and tracker.failures[0] <= now - self.threshold.window:
            tracker.failures.popleft()
        tracker.failures.append(now)
        if len(tracker.failures) >= self.threshold.max_failures:
            tracker.locked_until = now + self.threshold.lock
            tracker.failures.clear()
        self._forget(now)

    def _stale(self, tracker: _Tracker, now: float) -> bool:
        locked = tracker.locked_until is not None and now < tracker.locked_until
        recent = bool(tracker.failures) and tracker.failures[-1] > now - self.threshold.window
        return not locked and not recent

    def _forget(self, now: float) -> None:
        while self.entries and self._stale(next(iter(self.entries.values())), now):
            self.entries.popitem(last=False)
        while len(self.entries) > self.threshold.capacity:
            self.entries.popitem(last=False)


class LoginGuard:
    """Counts failed logins per account and per source and refuses locked ones (fail2ban in annex 2).

    The source is the client's IP address. It is kept in memory only, for at most the lock or window
    time and for at most `capacity` sources: never persisted, never logged, never in the audit log.
    Memory is bounded: beyond capacity, the least recently failing key is forgotten.

    Call `check` before looking at the password; on a wrong password or TOTP code `record_failure`,
    on success `record_success`. A success clears the account's failures but not its source's, so one
    good account cannot be used to keep guessing others from the same address.
    """

    def __init__(self, policy: LockoutPolicy | None = None) -> None:
        self.policy = policy or LockoutPolicy()
        self._accounts = _Counter(self.policy.account)
        self._sources = _Counter(self.policy.source)

    def check(self, account: str, source: str, now: float) -> LockedOut | None:
        """The lock in force for this account or source (the later-ending one), or None."""
        locks = [
            LockedOut(until, scope)
            for until, scope in (
                (self._accounts.locked_until(account.casefold(), now), LockScope.ACCOUNT),
                (self._sources.locked_until(source_key(source), now), LockScope.SOURCE),
            )
            if until is not None
        ]
        return max(locks, key=lambda lock: lock.until, default=None)

    def record_failure(self, account: str, source: str, now: float) -> LockedOut | None:
        """Count a failed attempt; returns the lock now in force, if any."""
        self._accounts.fail(account.casefold(), now)
        self._sources.fail(source_key(source), now)
        return self.check(account, source, now)

    def record_success(self, account: str, source: str, now: float) -> None:
        """Clear the account's failures (a lock in force stays). The source's count is kept."""
        tracker = self._accounts.entries.get(account.casefold())
        if tracker is not None:
            tracker.failures.clear()

    def unlock(self, account: str) -> None:
        """Lift an account's lock and failures (an admin's action, to be audited by the caller)."""
        self._accounts.entries.pop(account.casefold(), None)

    @property
    def tracked(self) -> tuple[int, int]:
        """How many accounts and sources are remembered now."""
        return len(self._accounts.entries), len(self._sources.entries)
