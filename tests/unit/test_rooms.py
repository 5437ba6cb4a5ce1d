"""The room registry alone: capacity, membership, who may signal whom."""

from __future__ import annotations

import pytest

from signaling.errors import AlreadyJoined, RoomFull, UnknownPeer
from signaling.rooms import Participant, RoomRegistry


def person(i: int, name: str | None = None) -> Participant:
    return Participant(id=f"peer-{i:04d}", name=name)


def test_admits_up_to_capacity_and_lists_earlier_arrivals() -> None:
    rooms = RoomRegistry()
    assert rooms.join("r", person(1, "Anna")).others == ()
    assert [p.id for p in rooms.join("r", person(2)).others] == ["peer-0001"]
    third = rooms.join("r", person(3))
    assert [p.id for p in third.others] == ["peer-0001", "peer-0002"]
    with pytest.raises(RoomFull):
        rooms.join("r", person(4))
    assert rooms.participants == 3 and rooms.room_of("peer-0004") is None


def test_capacity_is_configurable_but_never_above_three() -> None:
    rooms = RoomRegistry(capacity=2)
    rooms.join("r", person(1))
    rooms.join("r", person(2))
    with pytest.raises(RoomFull):
        rooms.join("r", person(3))
    for bad in (0, 4):
        with pytest.raises(ValueError, match="capacity"):
            RoomRegistry(capacity=bad)


def test_leave_frees_the_seat_and_forgets_empty_rooms() -> None:
    rooms = RoomRegistry()
    for i in range(3):
        rooms.join("r", person(i))
    departure = rooms.leave("peer-0001")
    assert departure is not None and not departure.room_now_empty
    assert [p.id for p in departure.remaining] == ["peer-0000", "peer-0002"]
    rooms.join("r", person(9))
    for peer in ("peer-0000", "peer-0002", "peer-0009"):
        last = rooms.leave(peer)
    assert last is not None and last.room_now_empty and rooms.active_rooms == 0
    assert rooms.leave("peer-0000") is None


def test_one_participant_is_in_one_room_only() -> None:
    rooms = RoomRegistry()
    rooms.join("a", person(1))
    with pytest.raises(AlreadyJoined):
        rooms.join("b", person(1))


def test_signaling_only_within_a_room_and_never_to_oneself() -> None:
    rooms = RoomRegistry()
    rooms.join("a", person(1))
    rooms.join("a", person(2))
    rooms.join("b", person(3))
    rooms.check_can_signal("peer-0001", "peer-0002")
    for sender, target in [("peer-0001", "peer-0003"), ("peer-0001", "peer-0001"), ("peer-0009", "peer-0001"),
                           ("peer-0001", "peer-0009")]:
        with pytest.raises(UnknownPeer):
            rooms.check_can_signal(sender, target)


def test_a_participant_is_found_by_id_while_in_a_room() -> None:
    registry = RoomRegistry()
    anna = Participant("anna-0001", "Anna")
    registry.join("room-1" * 4, anna)
    assert registry.participant("anna-0001") == anna
    registry.leave("anna-0001")
    assert registry.participant("anna-0001") is None
