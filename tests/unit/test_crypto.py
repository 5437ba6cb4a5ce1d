"""Per-controller keys: sealing, blind indexes, normalisation, the key folder's place and its cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from metadata_store.crypto import CryptoError, KeyStore, MissingKey, default_key_folder, normalise_ip


def test_a_value_opens_only_in_its_own_column_and_controller(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys")
    acme, other = keys.create("acme"), keys.create("other")
    sealed = acme.encrypt("sessions", "name", "Anna")
    assert b"Anna" not in sealed and acme.decrypt("sessions", "name", sealed) == "Anna"
    for wrong in (lambda: acme.decrypt("sessions", "email", sealed), lambda: other.decrypt("sessions", "name", sealed),
                  lambda: acme.decrypt("sessions", "name", sealed[:-1] + bytes([sealed[-1] ^ 1]))):
        with pytest.raises(CryptoError):
            wrong()
    assert acme.encrypt("sessions", "name", "Anna") != sealed  # a fresh nonce each time


def test_blind_indexes_match_normalised_values_and_differ_per_controller(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys")
    acme, other = keys.create("acme"), keys.create("other")
    assert acme.blind_index("name", " Anna  de Vries ") == acme.blind_index("name", "anna de vries")
    assert acme.blind_index("phone", "06-1234 5678") == acme.blind_index("phone", "+31 6 12345678")
    assert acme.blind_index("ip", "::ffff:192.0.2.7") == acme.blind_index("ip", "192.0.2.7")
    assert acme.blind_index("name", "Anna") != other.blind_index("name", "Anna")
    assert acme.blind_index("name", "Anna") != acme.blind_index("email", "Anna")


def test_a_bad_address_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValueError) as refused:
        normalise_ip("anna@example.nl")
    assert "anna" not in str(refused.value)


def test_the_default_key_folder_is_beside_the_data_folder_not_in_it(tmp_path: Path) -> None:
    folder = default_key_folder(tmp_path / "kijkmee-data")
    assert folder == tmp_path / "kijkmee-data-keys"
    assert (tmp_path / "kijkmee-data") not in folder.parents


def test_a_key_destroyed_by_another_node_stops_working_here_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = KeyStore(tmp_path / "keys"), KeyStore(tmp_path / "keys")
    here.create("acme")
    assert here.get("acme") == there.get("acme")
    assert there.destroy("acme") and not there.exists("acme")
    monkeypatch.setattr(KeyStore, "RECHECK_SECONDS", 0.0)
    with pytest.raises(MissingKey):
        here.get("acme")


def test_a_turkish_name_is_found_however_it_is_capitalised(tmp_path: Path) -> None:
    key = KeyStore(tmp_path / "keys").create("acme")
    spellings = ("Thomas A. Y\u0131lmaz", "THOMAS A. YILMAZ", "thomas a. yilmaz")
    assert len({key.blind_index("name", n) for n in spellings}) == 1
