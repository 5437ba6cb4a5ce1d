"""Synthetic sessions for bench/store: deterministic from a seed, plain values only (no I/O, no keys).

Every address is data only, drawn from ranges set aside for private use or documentation (10.0.0.0/8,
2001:db8::/32; the "absent" probes from 192.0.2.0/24 and 198.51.100.0/24), and is never sent anywhere.
Names are Dutch-looking combinations; e-mail addresses are under example.org/example.nl.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

CONTROLLERS = ("bench-a", "bench-b", "bench-c")
SPREAD_DAYS = 120
"""joined_at is spread evenly over this many days before `now`."""
LOOKUP_WINDOW_DAYS = 100
ROOM_SIZES = (1, 2, 2, 3, 3)
"""Sessions per room, drawn uniformly: rooms of 1 to 3 people, 2.2 on average."""
NAMED = 0.5
PHONE = 0.10
EMAIL = 0.10
SESSIONS_PER_NAME_PER_CONTROLLER = 5
"""The name pool is sized so that one name matches about this many sessions of one controller in the
lookup window: a handful, as a real name does."""
SESSIONS_PER_IP = 4
"""The address pool is sized so that one address has about this many sessions (over all controllers)."""
IPV6_SHARE = 0.25

FIRST_NAMES = (
    "Anna Bram Daan Emma Eva Femke Finn Fleur Gijs Hanna Isa Jan Jesse Julia Kees Lars Lieke Lisa Lotte Luuk "
    "Maarten Marieke Mark Maud Milan Noah Noor Olivier Pieter Roos Ruben Sanne Sara Sem Sophie Stijn Teun Thijs "
    "Tim Tom Vera Wouter Yara Zoë Bas Bente Cas Dirk Elif Fenna Gert Hugo Ilse Jeroen Joris Karin Koen Lena Levi "
    "Linda Maria Mees Mohammed Nina Otto Paul Quinten Rik Romy Saar Sven Tess Thomas Vincent Willem Yusuf Zeynep "
    "Ömer Aylin Chloë Anouk Bart Carla Dewi Emre Fatima Gerrit Hessel Iris Jochem Kim Loes Mila Nick Olga Priya "
    "Reinier Siem Tara Ugo Wessel Xander Youssef"
).split()
SURNAMES = (
    "de Vries|Jansen|de Jong|van den Berg|Bakker|Visser|Smit|Meijer|de Boer|Mulder|de Groot|Bos|Vos|Peters|"
    "Hendriks|van Leeuwen|Dekker|Brouwer|de Wit|Dijkstra|Smits|de Graaf|van der Meer|van der Linden|Kok|Jacobs|"
    "de Haan|Vermeulen|van den Heuvel|van der Veen|van den Broek|de Bruijn|de Bruin|van der Heijden|Schouten|"
    "van Beek|Willems|van Vliet|van de Ven|Hoekstra|Maas|Verhoeven|Koster|van Dam|van der Wal|Prins|Blom|Huisman|"
    "Peeters|de Jonge|Kuipers|van Veen|Post|Kuiper|Veenstra|Kramer|van den Brink|Scholten|van Wijk|Postma|Martens|"
    "Vink|de Ruiter|Timmermans|Groen|Gerritsen|Jonker|van Loon|Boer|van der Velde|Willemsen|Smeets|de Lange|"
    "de Vos|Bosch|van Dijk|Janssen|Y\u0131lmaz|Kaya|El Amrani|Bouzid|Şahin|Nguyen|Chen|Öztürk|Ramdin|Soekhoe"
).split("|")


@dataclass(frozen=True)
class Room:
    id: str
    controller_id: str
    created_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True)
class Session:
    """Plain values of one session, as `SqlStore.open_session` receives them, plus its telemetry."""

    controller_id: str
    room_id: str
    ip: str
    name: str | None
    phone: str | None
    email: str | None
    joined_at: dt.datetime
    left_at: dt.datetime | None
    participants: int
    route: str | None
    setup_ms: int | None


@dataclass(frozen=True)
class Probe:
    """One lookup: a value as an officer would type it; `present`: taken from a session of that
    controller inside the lookup window (so it matches at least one), else made up to match nothing."""

    controller_id: str
    kind: str
    value: str
    present: bool


@dataclass
class Candidates:
    """(controller, kind, canonical value) pairs seen in the lookup window, sampled while generating."""

    name: list[tuple[str, str]] = field(default_factory=list)
    ip: list[tuple[str, str]] = field(default_factory=list)


def _name_pool(size: int, rng: random.Random) -> list[str]:
    combos = [f"{first} {last}" for first in FIRST_NAMES for last in SURNAMES]
    rng.shuffle(combos)
    if size <= len(combos):
        return combos[:size]
    # Beyond first x last: add an initial, as people often type one ("Anna M. de Vries").
    extra = []
    for index in range(size - len(combos)):
        first, _, last = combos[index % len(combos)].partition(" ")
        extra.append(f"{first} {chr(ord('A') + (index // len(combos)) % 26)}. {last}")
    return combos + extra


def _ip(index: int) -> str:
    """Distinct addresses: most in 10.0.0.0/8, a quarter in 2001:db8::/32 (documentation range)."""
    if index % 4 == 3:
        return str(ipaddress.IPv6Address((0x20010DB8 << 96) | (index * 0x9E3779B97F4A7C15 % (1 << 96))))
    return str(ipaddress.IPv4Address((10 << 24) | (index * 2654435761 % (1 << 24))))


def typed_variant(name: str, rng: random.Random) -> str:
    """How a person might type their name another time: case and spacing differ, normalisation matches."""
    choice = rng.random()
    if choice < 0.5:
        return name
    if choice < 0.7:
        return name.lower()
    if choice < 0.85:
        return name.upper()
    return "  " + "  ".join(name.split()) + " "


class Population:
    """The synthetic sessions of one run: the same for every backend given the same seed and `now`."""

    def __init__(self, sessions: int, now: dt.datetime, seed: int = 20261129) -> None:
        self.sessions = sessions
        self.now = now
        self.seed = seed
        self.start = now - dt.timedelta(days=SPREAD_DAYS)
        self.window_start = now - dt.timedelta(days=LOOKUP_WINDOW_DAYS)
        per_controller_window_named = sessions * NAMED / len(CONTROLLERS) * LOOKUP_WINDOW_DAYS / SPREAD_DAYS
        self.name_pool_size = max(20, round(per_controller_window_named / SESSIONS_PER_NAME_PER_CONTROLLER))
        self.ip_pool_size = max(20, sessions // SESSIONS_PER_IP)
        self.phone_pool_size = max(20, sessions // 20)

    def batches(self, batch_size: int, candidates: Candidates | None = None
                ) -> Iterator[tuple[list[Room], list[Session]]]:
        """Rooms and their sessions in joined_at order (ids grow with time, as in production), in batches
        of about `batch_size` sessions. Fills `candidates` with values to look up, if given."""
        rng = random.Random(self.seed)
        names = _name_pool(self.name_pool_size, random.Random(self.seed + 1))
        window_count = self.sessions * LOOKUP_WINDOW_DAYS / SPREAD_DAYS
        keep = min(1.0, 4000 / max(1.0, window_count))
        step = dt.timedelta(days=SPREAD_DAYS) / self.sessions
        rooms: list[Room] = []
        sessions: list[Session] = []
        index = 0
        while index < self.sessions:
            size = min(rng.choice(ROOM_SIZES), self.sessions - index)
            controller = CONTROLLERS[rng.randrange(len(CONTROLLERS))]
            first_join = self.start + step * index
            room_id = f"{rng.getrandbits(128):032x}"  # stands in for secrets.token_urlsafe(16)
            created = first_join - dt.timedelta(seconds=rng.randrange(5, 1800))
            rooms.append(Room(room_id, controller, created, created + dt.timedelta(hours=24)))
            route = "relay" if rng.random() < 0.2 else "direct"
            for _ in range(size):
                joined = self.start + step * index + dt.timedelta(microseconds=rng.randrange(1_000_000))
                joined = min(joined, self.now - dt.timedelta(seconds=1))
                left: dt.datetime | None = joined + dt.timedelta(seconds=rng.randrange(60, 7200))
                if left is not None and left > self.now:
                    left = None  # still in the call
                ip = _ip(rng.randrange(self.ip_pool_size))
                name = canonical = None
                if rng.random() < NAMED:
                    canonical = names[rng.randrange(len(names))]
                    name = canonical if rng.random() < 0.8 else typed_variant(canonical, rng)
                phone = f"06-{rng.randrange(10_000_000, 10_000_000 + self.phone_pool_size):08d}" \
                    if rng.random() < PHONE else None
                email = None
                if rng.random() < EMAIL:
                    local = (name or "gast").strip().lower().replace(" ", ".")
                    email = f"{local}{rng.randrange(100)}@{rng.choice(('example.org', 'example.nl'))}"
                sessions.append(Session(
                    controller_id=controller, room_id=room_id, ip=ip, name=name, phone=phone, email=email,
                    joined_at=joined, left_at=left, participants=size, route=route if left else None,
                    setup_ms=rng.randrange(150, 4000) if left else None,
                ))
                if candidates is not None and joined >= self.window_start and rng.random() < keep:
                    candidates.ip.append((controller, ip))
                    if canonical is not None:
                        candidates.name.append((controller, canonical))
                index += 1
            if len(sessions) >= batch_size:
                yield rooms, sessions
                rooms, sessions = [], []
        if sessions or rooms:
            yield rooms, sessions

    def probes(self, candidates: Candidates, per_kind: int, absent_share: float = 0.1) -> list[Probe]:
        """`per_kind` name and `per_kind` IP lookups, shuffled: values that exist in the window (typed as an
        officer might: case and spacing vary for names) and a share of values nobody has."""
        rng = random.Random(self.seed + 2)
        probes: list[Probe] = []
        absent = round(per_kind * absent_share)
        for kind, pool in (("name", candidates.name), ("ip", candidates.ip)):
            present = rng.sample(pool, min(len(pool), per_kind - absent))
            for controller, value in present:
                probes.append(Probe(controller, kind, typed_variant(value, rng) if kind == "name" else value, True))
            for number in range(per_kind - len(present)):
                controller = CONTROLLERS[number % len(CONTROLLERS)]
                if kind == "name":
                    value = f"Onbekende Persoon {number}"
                else:
                    value = f"192.0.2.{number % 250 + 1}" if number % 2 else f"198.51.100.{number % 250 + 1}"
                probes.append(Probe(controller, kind, value, False))
        rng.shuffle(probes)
        return probes
