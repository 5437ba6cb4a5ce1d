"""Operator accounts: password policy, scrypt, TOTP (RFC 6238 vectors), the role matrix, lockout."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata_store.operators import (
    DEFAULT_SCRYPT,
    MATRIX,
    MESSAGES,
    LockedOut,
    LockoutPolicy,
    LockScope,
    LoginGuard,
    OperatorError,
    PasswordProblem,
    Permission,
    Role,
    ScryptParams,
    Threshold,
    allowed,
    check_password,
    common_passwords,
    hash_password,
    hotp,
    needs_rehash,
    parse_password_hash,
    password_problems,
    provisioning_uri,
    secret_from_base32,
    secret_to_base32,
    source_key,
    totp,
    verify_password,
    verify_totp,
)

P = PasswordProblem
SALT = bytes(range(16))
FAST = ScryptParams(log2_n=10, r=8, p=1)

# --- password policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("", [P.TOO_SHORT]),
        ("Tr0ub4dor&3", [P.TOO_SHORT]),
        ("password", [P.TOO_SHORT, P.COMMON]),
        ("correct horse battery staple", []),
        ("Tr0ub4dor&3xyz", []),
        ("x" * 257, [P.TOO_LONG]),
        ("Straßenbahn", [P.TOO_SHORT]),  # 11 characters, 12 once case-folded
        ("Password2024!", [P.COMMON]),
        ("P4ssw0rd2024!", [P.COMMON]),
        ("!!Wachtwoord2025", [P.COMMON]),
        ("welkom123456", [P.COMMON]),
        ("Zomer2025!!!!", [P.COMMON]),
        ("iloveyou1234", [P.COMMON]),
        ("alice-in-the-kitchen", [P.CONTAINS_USER_NAME]),
        ("keukenALICE9000", [P.CONTAINS_USER_NAME]),
        ("820476193582", [P.DIGITS_ONLY]),
        ("123456789012", [P.COMMON, P.DIGITS_ONLY, P.SEQUENTIAL]),
        ("abababababab", [P.REPETITIVE]),
        ("xyzxyzxyzxyz", [P.REPETITIVE, P.SEQUENTIAL]),
        ("kqmkqmkqmkqm", [P.REPETITIVE]),
        ("aaaabbbbcccc", [P.REPETITIVE]),
        ("welkomwelkom", [P.COMMON, P.REPETITIVE]),
        ("abcdefghijklmnop", [P.SEQUENTIAL]),
        ("zyxwvutsrqpo", [P.SEQUENTIAL]),
        ("mnbvcxzlkjhg", [P.SEQUENTIAL]),
        ("qwerty123456", [P.COMMON, P.SEQUENTIAL]),
        ("asdfghjkl987", [P.COMMON, P.SEQUENTIAL]),
        ("1q2w3e4r5t6y", [P.COMMON, P.SEQUENTIAL]),
        ("fiets-tulp-9-regen", []),
    ],
)
def test_password_policy(password: str, expected: list[PasswordProblem]) -> None:
    assert password_problems(password, "alice") == expected


def test_password_messages_in_english_and_dutch() -> None:
    assert check_password("password", "alice") == [
        "Use at least 12 characters.",
        "This password is too common: it is on lists that attackers try first.",
    ]
    assert check_password("password", "alice", "nl") == [
        "Gebruik minstens 12 tekens.",
        "Dit wachtwoord komt te vaak voor: het staat op lijsten die aanvallers eerst proberen.",
    ]
    assert check_password("bij-alice-op-de-thee", "Alice", "nl") == ["Zet je gebruikersnaam niet in je wachtwoord."]
    assert check_password("274274274274", "bob") == [
        "Do not use digits only: add letters or words.",
        "Do not repeat one character or a short pattern.",
    ]
    assert check_password("qwertyuiopasdfgh", "bob") == [
        "This password is too common: it is on lists that attackers try first.",
        "Do not use runs like abcd, 1234 or keyboard rows like qwerty.",
    ]
    assert check_password("fiets-tulp-9-regen", "bob", "nl") == []
    for language in ("en", "nl"):
        assert set(MESSAGES[language]) == set(PasswordProblem)
    with pytest.raises(OperatorError, match=r"^language must be one of: en, nl$"):
        check_password("x", "bob", "de")


def test_the_common_list_is_large_and_has_dutch_words() -> None:
    common = common_passwords()
    assert len(common) > 20_000
    assert {"123456", "password", "welkom", "wachtwoord", "geheim", "feyenoord", "zomer", "qazwsxedcrfv"} <= common
    assert all(word == word.casefold() and word == word.strip() and word for word in common)


def test_a_short_user_name_is_not_looked_for_and_a_custom_list_can_be_given() -> None:
    assert password_problems("jo-went-to-the-market", "jo") == []
    assert password_problems("fiets-tulp-9-regen", "bob", common={"fiets-tulp-9-regen"}) == [P.COMMON]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=20))
def test_the_policy_never_raises(password: str, user_name: str) -> None:
    problems = password_problems(password, user_name)
    assert len(problems) == len(set(problems))


# --- scrypt -----------------------------------------------------------------------------------------


def test_scrypt_round_trip_with_the_default_parameters() -> None:
    stored = hash_password("fiets-tulp-9-regen", SALT)
    assert re.fullmatch(r"scrypt\$n=2\*\*14,r=8,p=1\$AAECAwQFBgcICQoLDA0ODw\$[A-Za-z0-9+/]{43}", stored)
    assert verify_password("fiets-tulp-9-regen", stored)
    assert not verify_password("fiets-tulp-9-regeN", stored)
    assert not needs_rehash(stored)
    assert parse_password_hash(stored)[:2] == (DEFAULT_SCRYPT, SALT)


def test_scrypt_is_rfc_7914_and_our_encoding_is_pinned() -> None:
    # RFC 7914 section 12, second vector: the primitive underneath.
    assert hashlib.scrypt(b"password", salt=b"NaCl", n=1024, r=8, p=16, dklen=64).hex() == (
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
    )
    stored = hash_password("password", b"NaCl" * 4, FAST)
    assert stored == "scrypt$n=2**10,r=8,p=1$TmFDbE5hQ2xOYUNsTmFDbA$AughW9OQdIjb8Y7W3yGZXE5EX58i0ciSXZxtEpWJvdU"
    expected = hashlib.scrypt(b"password", salt=b"NaCl" * 4, n=1024, r=8, p=1, dklen=32)
    assert parse_password_hash(stored) == (FAST, b"NaCl" * 4, expected)


def test_parameters_are_encoded_and_old_ones_need_a_rehash() -> None:
    stored = hash_password("fiets-tulp-9-regen", SALT, FAST)
    assert stored.startswith("scrypt$n=2**10,r=8,p=1$")
    assert verify_password("fiets-tulp-9-regen", stored)
    assert needs_rehash(stored)
    assert not needs_rehash(stored, FAST)


def test_unicode_passwords_are_normalised() -> None:
    composed = unicodedata.normalize("NFC", "café-op-het-plein")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert verify_password(decomposed, hash_password(composed, SALT, FAST))


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain-text-password",
        "scrypt$n=2**10,r=8,p=1$AAECAwQFBgcICQoLDA0ODw",
        "scrypt$n=2**10,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$!!!",
        "scrypt$n=2**30,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$AAAA",  # would need 128 GiB: refused, not run
        "scrypt$n=2**10,r=8,p=1$AAAA$" + "A" * 43,  # salt too short
        "scrypt$n=2**10,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$AAAA",  # hash too short
        "pbkdf2_sha256$600000$salt$hash",
    ],
)
def test_a_malformed_stored_hash_never_verifies(stored: str) -> None:
    assert not verify_password("anything", stored)
    assert needs_rehash(stored)


def test_scrypt_refuses_short_salts_and_wild_parameters() -> None:
    with pytest.raises(OperatorError, match=r"^salt must be at least 16 random bytes$"):
        hash_password("fiets-tulp-9-regen", b"short")
    with pytest.raises(OperatorError, match=r"^scrypt parameters out of range: log2_n 10-20, r 1-32, p 1-16$"):
        ScryptParams(log2_n=21, r=8, p=1)
    with pytest.raises(OperatorError, match=r"^scrypt parameters would need more than 256 MiB$"):
        ScryptParams(log2_n=20, r=32, p=1)


# --- TOTP -------------------------------------------------------------------------------------------

SEED_SHA1 = b"12345678901234567890"
SEED_SHA256 = b"12345678901234567890123456789012"
SEED_SHA512 = b"1234567890123456789012345678901234567890123456789012345678901234"

RFC6238_APPENDIX_B = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("now", "sha1", "sha256", "sha512"), RFC6238_APPENDIX_B)
def test_rfc6238_appendix_b(now: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp(SEED_SHA1, now, digits=8, algorithm="sha1") == sha1
    assert totp(SEED_SHA256, now, digits=8, algorithm="sha256") == sha256
    assert totp(SEED_SHA512, now, digits=8, algorithm="sha512") == sha512


def test_rfc4226_appendix_d() -> None:
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
    assert [hotp(SEED_SHA1, counter) for counter in range(10)] == expected


def test_totp_accepts_one_step_either_side_and_no_more() -> None:
    now = 1_700_000_015.0  # step 56666667
    step = 56_666_667
    for offset in (-1, 0, 1):
        code = totp(SEED_SHA1, now + 30 * offset)
        assert verify_totp(SEED_SHA1, code, now) == step + offset
    for offset in (-2, 2):
        assert verify_totp(SEED_SHA1, totp(SEED_SHA1, now + 30 * offset), now) is None
    assert verify_totp(SEED_SHA1, totp(SEED_SHA1, now + 60), now, window=2) == step + 2
    assert verify_totp(SEED_SHA1, totp(SEED_SHA1, now + 30), now, window=0) is None


def test_a_code_works_once() -> None:
    now = 1_700_000_015.0
    code = totp(SEED_SHA1, now)
    used = verify_totp(SEED_SHA1, code, now)
    assert used == 56_666_667
    assert verify_totp(SEED_SHA1, code, now + 10, last_used_step=used) is None
    assert verify_totp(SEED_SHA1, totp(SEED_SHA1, now - 30), now, last_used_step=used) is None
    assert verify_totp(SEED_SHA1, totp(SEED_SHA1, now + 30), now + 30, last_used_step=used) == used + 1


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "12345a", "-12345", "12.345", " "])
def test_malformed_codes_do_not_match(typed: str) -> None:
    assert verify_totp(SEED_SHA1, typed, 59) is None


def test_spaces_and_full_width_digits_in_a_typed_code_are_accepted() -> None:
    code = totp(SEED_SHA1, 59)
    assert verify_totp(SEED_SHA1, f"{code[:3]} {code[3:]}", 59) == 1
    full_width = "".join(chr(0xFF10 + int(digit)) for digit in code)
    assert verify_totp(SEED_SHA1, full_width, 59) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12), st.floats(min_value=0, max_value=2**40))
def test_verify_totp_never_raises_on_typed_codes(typed: str, now: float) -> None:
    assert verify_totp(SEED_SHA1, typed, now) in (None, *range(int(now // 30) - 1, int(now // 30) + 2))


def test_totp_refuses_bad_parameters() -> None:
    with pytest.raises(OperatorError, match=r"^algorithm must be one of: sha1, sha256, sha512$"):
        totp(SEED_SHA1, 59, algorithm="md5")
    with pytest.raises(OperatorError, match=r"^digits must be 6 to 10$"):
        totp(SEED_SHA1, 59, digits=4)
    with pytest.raises(OperatorError, match=r"^step must be positive and now not before 1970$"):
        totp(SEED_SHA1, -1)


def test_base32_secrets() -> None:
    assert secret_to_base32(SEED_SHA1) == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert secret_from_base32("gezd gnbv-gy3t qojq gezd gnbv gy3t qojq") == SEED_SHA1
    assert secret_from_base32(secret_to_base32(b"\x00\xff\x10")) == b"\x00\xff\x10"
    with pytest.raises(OperatorError, match=r"^not a base32 secret$"):
        secret_from_base32("not base32 at all 1")


def test_provisioning_uri() -> None:
    assert provisioning_uri(SEED_SHA1, "alice") == (
        "otpauth://totp/kijkmee:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=kijkmee"
        "&algorithm=SHA1&digits=6&period=30"
    )
    assert provisioning_uri(SEED_SHA256, "bob smit", issuer="Kijk Mee", algorithm="sha256", digits=8).startswith(
        "otpauth://totp/Kijk%20Mee:bob%20smit?secret="
    )
    with pytest.raises(OperatorError, match=r"^a TOTP secret must be at least 16 bytes \(20 recommended\)$"):
        provisioning_uri(b"short", "alice")
    with pytest.raises(OperatorError, match=r"^issuer and account must not contain ':'$"):
        provisioning_uri(SEED_SHA1, "a:b")


# --- roles ------------------------------------------------------------------------------------------

# The authorisation matrix, spelled out. Changing MATRIX means changing this table on purpose.
EXPECTED_MATRIX = """
permission            viewer  privacy_officer  admin  auditor
sessions.read           x           x            .       .
subjects.search         .           x            .       .
subjects.export         .           x            .       .
subjects.rectify        .           x            .       .
subjects.erase          .           x            .       .
subjects.restrict       .           x            .       .
controllers.export      .           x            .       .
controllers.offboard    .           .            x       .
breaches.read           .           x            x       x
breaches.write          .           x            x       .
breaches.notify         .           x            .       .
register.read           x           x            x       x
audit.read              .           x            .       x
audit.verify            .           x            x       x
operators.manage        .           .            x       .
retention.run           .           .            x       .
backup.run              .           .            x       .
backup.restore          .           .            x       .
"""


def render_matrix() -> str:
    roles = list(Role)
    widths = [len(r.value) + 2 for r in roles]
    lines = ["permission".ljust(22) + "".join(r.value.ljust(w) for r, w in zip(roles, widths, strict=True))]
    for permission in Permission:
        cells = (("x" if allowed(r, permission) else ".").ljust(w) for r, w in zip(roles, widths, strict=True))
        lines.append(permission.value.ljust(22) + "".join(cells))
    return "\n".join(line.rstrip() for line in lines)


def test_the_authorisation_matrix_is_exactly_the_table() -> None:
    print("\n" + render_matrix())
    rows = [line.split() for line in EXPECTED_MATRIX.strip().splitlines()]
    header, body = rows[0], rows[1:]
    assert header[1:] == [r.value for r in Role]
    assert [row[0] for row in body] == [p.value for p in Permission]
    for row in body:
        permission = Permission(row[0])
        for role, cell in zip(Role, row[1:], strict=True):
            assert allowed(role, permission) == (cell == "x"), (role, permission)
    assert set(MATRIX) == set(Role)


def test_least_privilege_properties() -> None:
    personal = {p for p in Permission if p.value.startswith(("sessions.", "subjects.", "controllers.export"))}
    assert not MATRIX[Role.AUDITOR] & personal
    assert not MATRIX[Role.ADMIN] & personal
    assert {r for r in Role if allowed(r, Permission.OPERATORS_MANAGE)} == {Role.ADMIN}
    assert all(allowed(r, Permission.REGISTER_READ) for r in Role)


# --- lockout ----------------------------------------------------------------------------------------

T = 1_800_000_000.0


def test_five_failures_lock_the_account_for_15_minutes() -> None:
    guard = LoginGuard()
    for i in range(4):
        assert guard.record_failure("alice", "192.0.2.1", T + i) is None
    locked = LockedOut(until=T + 4 + 900, scope=LockScope.ACCOUNT)
    assert guard.record_failure("Alice", "192.0.2.1", T + 4) == locked
    assert guard.check("ALICE", "198.51.100.7", T + 10) == locked  # any source
    assert guard.check("bob", "192.0.2.1", T + 10) is None  # the source is not locked
    assert guard.check("alice", "192.0.2.1", T + 4 + 899) == locked
    assert guard.check("alice", "192.0.2.1", T + 4 + 900) is None
    assert guard.record_failure("alice", "192.0.2.1", T + 905) is None  # the count started again


def test_failures_spread_beyond_the_window_do_not_lock() -> None:
    guard = LoginGuard()
    for i in range(20):
        assert guard.record_failure("alice", f"192.0.2.{i}", T + i * 240) is None  # 4 in any 15 minutes


def test_a_success_resets_the_account_count_but_not_a_lock() -> None:
    guard = LoginGuard()
    for i in range(4):
        guard.record_failure("alice", "192.0.2.1", T + i)
    guard.record_success("alice", "192.0.2.1", T + 5)
    for i in range(4):
        assert guard.record_failure("alice", "192.0.2.1", T + 10 + i) is None
    assert guard.record_failure("alice", "192.0.2.1", T + 20) is not None
    guard.record_success("alice", "192.0.2.1", T + 21)
    assert guard.check("alice", "192.0.2.1", T + 22) is not None


def test_twenty_failures_from_one_source_lock_it_for_an_hour() -> None:
    guard = LoginGuard()
    for i in range(19):
        assert guard.record_failure(f"user{i}", "2001:db8:1:2::a", T + i) is None
    locked = LockedOut(until=T + 19 + 3600, scope=LockScope.SOURCE)
    assert guard.record_failure("user19", "2001:db8:1:2::b", T + 19) == locked  # same /64
    assert guard.check("carol", "2001:db8:1:2:ffff::1", T + 30) == locked
    assert guard.check("carol", "2001:db8:1:3::1", T + 30) is None
    guard.record_success("user0", "2001:db8:1:2::a", T + 30)
    assert guard.check("dave", "2001:db8:1:2::a", T + 31) == locked  # a success elsewhere does not unlock
    assert guard.check("dave", "2001:db8:1:2::a", T + 19 + 3600) is None


def test_the_later_lock_wins_when_both_apply() -> None:
    guard = LoginGuard()
    for i in range(20):
        guard.record_failure("alice" if i < 5 else f"user{i}", "192.0.2.9", T + i)
    assert guard.check("alice", "192.0.2.9", T + 20) == LockedOut(T + 19 + 3600, LockScope.SOURCE)
    assert guard.check("alice", "192.0.2.10", T + 20) == LockedOut(T + 4 + 900, LockScope.ACCOUNT)


def test_an_admin_can_unlock_an_account() -> None:
    guard = LoginGuard()
    for i in range(5):
        guard.record_failure("alice", f"192.0.2.{i}", T + i)
    guard.unlock("ALICE")
    assert guard.check("alice", "192.0.2.200", T + 10) is None


def test_memory_is_bounded() -> None:
    small = Threshold(max_failures=3, window=60, lock=60, capacity=3)
    guard = LoginGuard(LockoutPolicy(account=small, source=small))
    for i in range(100):
        guard.record_failure(f"user{i}", f"192.0.2.{i}", T + i / 100)
    assert guard.tracked == (3, 3)
    guard.record_failure("late", "198.51.100.1", T + 1000)  # everything older is stale and forgotten
    assert guard.tracked == (1, 1)


def test_source_keys() -> None:
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source_key("unix-socket") == "unix-socket"


def test_thresholds_are_validated() -> None:
    with pytest.raises(OperatorError, match=r"^lockout thresholds must be positive$"):
        Threshold(max_failures=0, window=60, lock=60, capacity=10)
