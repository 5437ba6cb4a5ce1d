"""TURN REST credentials (coturn use-auth-secret) and stateless nonces."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from turn_relay.auth import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_NONCE_LIFETIME,
    CredentialRejected,
    NonceStatus,
    RejectReason,
    RestCredentialVerifier,
    check_nonce,
    make_nonce,
    mint_turn_credentials,
    rest_password,
    username_expiry,
)
from turn_relay.stun import (
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    Username,
    decode_message,
    encode_message,
    long_term_key,
    verify_message_integrity,
)

SECRET = b"kijkmee-test-secret"
OLD_SECRET = b"kijkmee-old-secret"
REALM = "kijkmee.example"
NOW = 1_718_000_000.75

# Derived independently with OpenSSL 3.0:
#   printf %s "1718000600:alice" | openssl dgst -sha1 -hmac "kijkmee-test-secret" -binary | base64
#   printf %s "1718000600:alice:kijkmee.example:oy6tAg0QZxbz5IR3sS1Ix+1huEg=" | openssl dgst -md5 -r
OPENSSL_PASSWORD = "oy6tAg0QZxbz5IR3sS1Ix+1huEg="
OPENSSL_KEY = bytes.fromhex("e1e76f3097f1ca4b70364f1ce92f283c")


def test_mint_matches_coturn_scheme() -> None:
    username, password = mint_turn_credentials(SECRET, "alice", NOW, 600)
    assert username == "1718000600:alice"  # expiry = floor(now) + ttl, coturn's "<timestamp>:<user>"
    assert password == OPENSSL_PASSWORD
    assert long_term_key(username, REALM, password) == OPENSSL_KEY


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("user", ["alice", "", "room:7f3a", "\u00e9t\u00e9"])
def test_mint_matches_openssl(user: str) -> None:
    username, password = mint_turn_credentials(SECRET, user, NOW, 86_400)
    digest = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", SECRET.decode(), "-binary"],
        input=username.encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert password == base64.b64encode(digest).decode()


def test_mint_without_user_and_bad_input() -> None:
    assert mint_turn_credentials(SECRET, "", NOW, 60)[0] == "1718000060"
    with pytest.raises(ValueError, match=r"^ttl 0 is not positive$"):
        mint_turn_credentials(SECRET, "alice", NOW, 0)
    with pytest.raises(ValueError, match=r"^the TURN secret is empty$"):
        mint_turn_credentials(b"", "alice", NOW, 60)
    with pytest.raises(ValueError, match=r"^username of 509 bytes exceeds 508$"):
        mint_turn_credentials(SECRET, "u" * 498, NOW, 60)


def test_username_expiry() -> None:
    assert username_expiry("1718000600:alice") == 1718000600
    assert username_expiry("1718000600") == 1718000600
    assert username_expiry("1718000600:a:b") == 1718000600
    for bad in ["alice", ":1718000600", "", "17180006OO:x", "\u0661\u0662:x", "-5:x", "1" * 13]:
        with pytest.raises(CredentialRejected) as info:
            username_expiry(bad)
        assert info.value.reason is RejectReason.MALFORMED_USERNAME
        assert str(info.value) == "malformed-username: no expiry timestamp before the separator"


def _signed_request(username: str, password: str) -> Message:
    """A client's Allocate request signed with the credentials, as decoded by the relay."""
    request = Message(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        bytes(12),
        (Username(username), Realm(REALM), Nonce("n")),
    )
    return decode_message(encode_message(request, integrity_key=long_term_key(username, REALM, password)))


def _verify(verifier: RestCredentialVerifier, message: Message, now: float) -> bytes:
    username = message.get(Username)
    assert username is not None
    return verifier.verify(username.text, now, lambda key: verify_message_integrity(message, key))


def test_verifier_accepts_current_and_rotated_out_secret() -> None:
    verifier = RestCredentialVerifier((SECRET, OLD_SECRET), REALM)
    for secret in (SECRET, OLD_SECRET):
        username, password = mint_turn_credentials(secret, "alice", NOW, 600)
        key = _verify(verifier, _signed_request(username, password), NOW)
        assert key == long_term_key(username, REALM, password)
    assert len(verifier.candidate_keys("1718000600:alice", NOW)) == 2


def test_verifier_rejects_unknown_secret_and_wrong_password() -> None:
    verifier = RestCredentialVerifier((SECRET,), REALM)
    username, password = mint_turn_credentials(OLD_SECRET, "alice", NOW, 600)  # rotated out
    with pytest.raises(CredentialRejected) as info:
        _verify(verifier, _signed_request(username, password), NOW)
    assert info.value.reason is RejectReason.BAD_INTEGRITY
    username, _ = mint_turn_credentials(SECRET, "alice", NOW, 600)
    with pytest.raises(CredentialRejected, match=r"^bad-integrity: no secret gives a matching"):
        _verify(verifier, _signed_request(username, "guess"), NOW)
    # The user part is covered by the password: changing it breaks the credential.
    username, password = mint_turn_credentials(SECRET, "alice", NOW, 600)
    with pytest.raises(CredentialRejected):
        _verify(verifier, _signed_request(username.replace("alice", "mallory"), password), NOW)


def test_expiry_and_clock_skew() -> None:
    verifier = RestCredentialVerifier((SECRET,), REALM, clock_skew=30)
    username, password = mint_turn_credentials(SECRET, "alice", NOW, 600)
    request = _signed_request(username, password)
    expiry = 1_718_000_600
    _verify(verifier, request, expiry)  # at expiry
    _verify(verifier, request, expiry + 30)  # within the skew allowance
    with pytest.raises(CredentialRejected) as info:
        _verify(verifier, request, expiry + 30.5)
    assert info.value.reason is RejectReason.EXPIRED
    assert str(info.value) == "expired: expired 30 s ago"
    strict = RestCredentialVerifier((SECRET,), REALM, clock_skew=0)
    with pytest.raises(CredentialRejected, match=r"^expired: "):
        _verify(strict, request, expiry + 1)
    assert DEFAULT_CLOCK_SKEW == 30.0


def test_verifier_configuration_errors() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        RestCredentialVerifier((), REALM)
    with pytest.raises(ValueError, match="at least one secret"):
        RestCredentialVerifier((SECRET, b""), REALM)
    with pytest.raises(ValueError, match=r"^clock skew -1 is negative$"):
        RestCredentialVerifier((SECRET,), REALM, clock_skew=-1)


def test_rest_password_is_base64_hmac_sha1() -> None:
    assert rest_password(SECRET, "1718000600:alice") == OPENSSL_PASSWORD


NONCE_KEY = bytes(range(32))
CLIENT = "udp/203.0.113.5:49152"


def test_nonce_format() -> None:
    nonce = make_nonce(NONCE_KEY, NOW, CLIENT)
    assert nonce.startswith(f"{int(NOW):x}.")
    assert len(nonce) < 128 and len(nonce) == 8 + 1 + 22
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in nonce)  # quoted-string safe
    assert not nonce.startswith("obMatJos2")
    assert make_nonce(NONCE_KEY, NOW, CLIENT) == nonce  # deterministic: no randomness here
    assert make_nonce(NONCE_KEY, NOW + 1, CLIENT) != nonce
    assert make_nonce(NONCE_KEY, NOW, "udp/203.0.113.5:49153") != nonce
    Nonce(nonce)  # fits the NONCE attribute
    with pytest.raises(ValueError, match="nonce key is empty"):
        make_nonce(b"", NOW, CLIENT)


def test_nonce_valid_then_stale() -> None:
    nonce = make_nonce(NONCE_KEY, NOW, CLIENT)
    assert check_nonce(NONCE_KEY, nonce, NOW, CLIENT) is NonceStatus.VALID
    assert check_nonce(NONCE_KEY, nonce, int(NOW) + 599.9, CLIENT) is NonceStatus.VALID
    assert check_nonce(NONCE_KEY, nonce, int(NOW) + 600, CLIENT) is NonceStatus.STALE
    assert check_nonce(NONCE_KEY, nonce, NOW + 60, CLIENT, lifetime=30) is NonceStatus.STALE
    assert check_nonce(NONCE_KEY, nonce, NOW - 5, CLIENT) is NonceStatus.STALE  # clock went back
    assert DEFAULT_NONCE_LIFETIME == 600.0


@pytest.mark.parametrize(
    "nonce",
    [
        "",
        "garbage",
        "obMatJos2AAAAxyz",
        "\u00e9",
        "666a0b80.AAAAAAAAAAAAAAAAAAAAAA",  # right shape, forged MAC
    ],
)
def test_nonce_invalid(nonce: str) -> None:
    assert check_nonce(NONCE_KEY, nonce, NOW, CLIENT) is NonceStatus.INVALID


def test_nonce_bound_to_key_client_and_spelling() -> None:
    nonce = make_nonce(NONCE_KEY, NOW, CLIENT)
    assert check_nonce(bytes(32), nonce, NOW, CLIENT) is NonceStatus.INVALID  # relay restarted: new key
    assert check_nonce(NONCE_KEY, nonce, NOW, "tcp/203.0.113.5:49152") is NonceStatus.INVALID
    # The same issue time spelled with a leading zero is not the nonce we gave out.
    assert check_nonce(NONCE_KEY, "0" + nonce, NOW, CLIENT) is NonceStatus.INVALID
    issued, mac = nonce.split(".")
    assert check_nonce(NONCE_KEY, f"{int(issued, 16) - 1:x}.{mac}", NOW, CLIENT) is NonceStatus.INVALID
    assert check_nonce(NONCE_KEY, nonce + "x", NOW, CLIENT) is NonceStatus.INVALID
