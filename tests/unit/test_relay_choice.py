"""Which relay node a joining participant gets (kijkmee/relay_nodes.py), and how nodes are configured."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from kijkmee.cli import build_parser
from kijkmee.config import ConfigError, ServeConfig, load_config
from kijkmee.fleet import RelayFleet, Report
from kijkmee.relay_nodes import (
    Choice,
    Fallback,
    NodeStatus,
    NodeView,
    RelayNodeSpec,
    TurnAddress,
    choose_relay,
    parse_relay_node,
    parse_turn_url,
)

UP, DOWN, DRAINING, UNKNOWN = NodeStatus.UP, NodeStatus.DOWN, NodeStatus.DRAINING, NodeStatus.UNKNOWN


def view(name: str, status: NodeStatus = UP, allocations: int | None = 0, handed: int = 0) -> NodeView:
    return NodeView(name, status, allocations, handed)


def test_the_least_loaded_healthy_node_is_chosen() -> None:
    nodes = [view("a", allocations=40), view("b", allocations=7), view("c", allocations=12)]
    assert choose_relay(nodes, 0) == Choice(("b",))
    assert choose_relay(nodes, 1) == Choice(("b",))


def test_draining_down_and_unchecked_nodes_are_never_chosen_while_one_is_healthy() -> None:
    nodes = [view("idle-but-draining", DRAINING, 0), view("idle-but-down", DOWN, None),
             view("unchecked", UNKNOWN, None), view("busy", UP, 500)]
    for turn in range(10):
        assert choose_relay(nodes, turn) == Choice(("busy",))


def test_joins_handed_out_since_the_last_report_count_as_load() -> None:
    # b was idle at the last poll but has been handed 10 joins since: a is now the better pick.
    assert choose_relay([view("a", allocations=6), view("b", allocations=0, handed=10)], 0) == Choice(("a",))


def simulate(nodes: list[NodeView], joins: int) -> Counter[str]:
    """Joins in a row between two polls, as the fleet does them: each pick counts against its node."""
    handed: Counter[str] = Counter()
    for turn in range(joins):
        current = [NodeView(n.name, n.status, n.allocations, n.handed + handed[n.name]) for n in nodes]
        choice = choose_relay(current, turn)
        assert len(choice.nodes) == 1 and choice.fallback is None
        handed[choice.nodes[0]] += 1
    return handed


def test_equal_nodes_take_turns() -> None:
    assert simulate([view("a"), view("b"), view("c")], 9) == Counter({"a": 3, "b": 3, "c": 3})


def test_exact_ties_rotate_with_the_turn_counter() -> None:
    nodes = [view("a", allocations=5), view("b", allocations=5)]
    assert [choose_relay(nodes, turn).nodes for turn in range(4)] == [("a",), ("b",), ("a",), ("b",)]


def test_a_burst_between_polls_fills_the_idle_node_up_to_the_others_then_spreads() -> None:
    handed = simulate([view("busy", allocations=20), view("idle", allocations=0)], 30)
    assert handed == Counter({"idle": 25, "busy": 5})


def test_a_node_that_reports_no_load_counts_as_the_average() -> None:
    nodes = [view("ours-1", allocations=10), view("ours-2", allocations=30), view("coturn", allocations=None)]
    # the average of 10 and 30 is 20: coturn loses to ours-1 (10), wins against ours-2 (30)
    assert choose_relay(nodes, 0) == Choice(("ours-1",))
    # ours-1 has since been handed 15 joins (25): now coturn's 20 is the least
    assert choose_relay([view("ours-1", allocations=10, handed=15), nodes[1], nodes[2]], 0) == Choice(("coturn",))
    # only nodes without a load figure: they take turns
    assert simulate([view("x", allocations=None), view("y", allocations=None)], 4) == Counter({"x": 2, "y": 2})


def test_none_healthy_hands_out_every_node_that_is_not_draining() -> None:
    nodes = [view("a", DOWN, None), view("b", DRAINING, 3), view("c", UNKNOWN, None)]
    assert choose_relay(nodes, 0) == Choice(("a", "c"), Fallback.NONE_HEALTHY)


def test_all_draining_hands_out_none() -> None:
    assert choose_relay([view("a", DRAINING), view("b", DRAINING)], 0) == Choice((), Fallback.ALL_DRAINING)
    assert choose_relay([], 0) == Choice((), Fallback.ALL_DRAINING)


# -- describing nodes ---------------------------------------------------------------------------


def test_turn_urls() -> None:
    assert parse_turn_url("turn:relay-a.example.nl:3478?transport=udp") == TurnAddress(
        "turn", "relay-a.example.nl", 3478, "udp")
    assert parse_turn_url("turn:[2001:db8::1]:3478") == TurnAddress("turn", "2001:db8::1", 3478, "udp")
    assert parse_turn_url("turns:relay-a.example.nl:443").transport == "tcp"
    for bad in ("stun:relay:3478", "turn:relay", "turn:relay:0", "turns:relay:5349?transport=udp",
                "turn:relay:3478?transport=sctp"):
        with pytest.raises(ValueError):
            parse_turn_url(bad)


def test_a_node_from_a_flag_string_and_its_probe_address() -> None:
    node = parse_relay_node("name=dc1-a turns:relay-a.example.nl:5349?transport=tcp "
                            "turn:192.0.2.7:3478?transport=udp health=https://10.0.1.21:9641/healthz ca=/etc/ca.pem")
    assert node == RelayNodeSpec(
        "dc1-a", ("turns:relay-a.example.nl:5349?transport=tcp", "turn:192.0.2.7:3478?transport=udp"),
        health_url="https://10.0.1.21:9641/healthz", ca_file=Path("/etc/ca.pem"),
    )
    assert node.probe_address() == TurnAddress("turn", "192.0.2.7", 3478, "udp")  # UDP preferred
    tls_only = parse_relay_node("name=t turns:relay:5349")
    assert tls_only.probe_address() == TurnAddress("turns", "relay", 5349, "tcp")


@pytest.mark.parametrize(("raw", "message"), [
    ("turn:relay:3478", "name None"),
    ("name=a", "urls must list at least one"),
    ("name=a turn:relay:3478 health=ftp://x", "health_url 'ftp://x' is not an http"),
    ("name=a turn:relay:3478 bogus", "'bogus' is neither"),
    ("name=bad/name turn:relay:3478", "name 'bad/name'"),
    ({"name": "a", "urls": ["turn:relay:3478"], "weight": 3}, "unknown key(s) weight"),
    (42, "a relay node is a table"),
])
def test_malformed_nodes_are_refused_with_a_reason(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_relay_node(raw)
    assert message in str(refused.value)


SECRET_LINE = "turn_secret_file = \"/etc/kijkmee/turn-secret\"\nembedded_relay = false\n"


def test_relay_nodes_from_toml_tables_env_and_repeated_flags(tmp_path: Path) -> None:
    file = tmp_path / "serve.toml"
    (tmp_path / "internal-ca.pem").write_text("a CA certificate\n")
    file.write_text(SECRET_LINE + f"""relay_health_seconds = 5
[[relay_nodes]]
name = "dc1-a"
urls = ["turn:192.0.2.7:3478?transport=udp", "turns:relay-a.example.nl:5349?transport=tcp"]
health_url = "https://10.0.1.21:9641/healthz"
ca_file = "{tmp_path}/internal-ca.pem"

[[relay_nodes]]
name = "dc2-coturn"
urls = "turn:198.51.100.9:3478"
""")
    config = load_config(ServeConfig, file=file)
    assert [n.name for n in config.relay_nodes] == ["dc1-a", "dc2-coturn"]
    assert config.relay_nodes[0].ca_file == tmp_path / "internal-ca.pem"
    assert config.relay_nodes[1].urls == ("turn:198.51.100.9:3478",) and config.relay_nodes[1].health_url is None
    assert config.relay_health_seconds == 5
    env = {"KIJKMEE_RELAY_NODES": "name=x turn:192.0.2.1:3478,name=y turn:192.0.2.2:3478"}
    assert [n.name for n in load_config(ServeConfig, file=file, env=env).relay_nodes] == ["x", "y"]
    args = vars(build_parser().parse_args(["serve", "--relay-nodes", "name=f1 turn:192.0.2.3:3478",
                                           "--relay-nodes", "name=f2 turn:192.0.2.4:3478"]))
    flags = {k: v for k, v in args.items() if k not in ("command", "config")}
    assert [n.name for n in load_config(ServeConfig, file=file, flags=flags).relay_nodes] == ["f1", "f2"]


@pytest.mark.parametrize(("toml", "message"), [
    ('[[relay_nodes]]\nname = "a"\nurls = ["http://x"]\n', "relay_nodes: relay node a: "),
    ('relay_nodes = ["name=a turn:192.0.2.1:3478"]\n', "relay_nodes: set turn_secret_file"),
    (SECRET_LINE + 'relay_nodes = ["name=a turn:192.0.2.1:3478", "name=a turn:192.0.2.2:3478"]\n',
     "every node needs its own name"),
    ('turn_secret_file = "/s"\nrelay_nodes = ["name=embedded turn:192.0.2.1:3478"]\n', "every node needs its own"),
    (SECRET_LINE + "relay_health_seconds = 0\n", "relay_health_seconds: 0.0 is not between"),
    (SECRET_LINE + 'relay_nodes = ["name=a turn:192.0.2.1:3478 health=https://x/healthz ca=/nonexistent/ca.pem"]\n',
     "relay_nodes: a: ca_file /nonexistent/ca.pem is not a readable file"),
])
def test_bad_relay_node_settings_stop_start_up(tmp_path: Path, toml: str, message: str) -> None:
    file = tmp_path / "serve.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError) as refused:
        load_config(ServeConfig, file=file)
    assert message in str(refused.value)


# -- the poller's bookkeeping (no network: members whose state is read in process) --------------------


def fleet_of(*names: str, reports: dict[str, list[NodeStatus]]) -> RelayFleet:
    feeds = {name: iter(reports[name]) for name in names}

    def probe(name: str) -> Callable[[], Report]:
        return lambda: Report(next(feeds[name]), allocations=0)

    return RelayFleet([], local={n: (RelayNodeSpec(n, (f"turn:192.0.2.{i + 1}:3478",)), probe(n))
                                 for i, n in enumerate(names)})


async def test_a_node_that_was_up_counts_as_down_after_two_failed_checks_in_a_row() -> None:
    fleet = fleet_of("a", reports={"a": [UP, DOWN, UP, DOWN, DOWN, DOWN, UP]})
    seen = []
    for _ in range(7):
        await fleet.poll_once()
        seen.append(fleet.states()["a"].status)
    assert seen == [UP, UP, UP, UP, DOWN, DOWN, UP]
    never_up = fleet_of("b", reports={"b": [DOWN]})
    await never_up.poll_once()
    assert never_up.states()["b"].status is DOWN


async def test_joins_count_against_their_node_until_its_next_report(caplog: pytest.LogCaptureFixture) -> None:
    fleet = fleet_of("a", "b", reports={"a": [UP, UP, DRAINING], "b": [UP, UP, DOWN]})
    await fleet.poll_once()
    picks = [fleet.choose().nodes for _ in range(4)]
    assert sorted(picks) == [("a",), ("a",), ("b",), ("b",)]
    assert fleet.states()["a"].handed == 2
    await fleet.poll_once()
    assert fleet.states()["a"].handed == 0  # the report now counts what those joins did
    caplog.set_level("INFO", logger="kijkmee.fleet")
    caplog.clear()  # only what this round logs (earlier tests may have left the logger at INFO)
    await fleet.poll_once()  # a drains; b fails once (still up for a round)
    assert fleet.choose().nodes == ("b",)
    assert [r.getMessage() for r in caplog.records] == ["relay node is draining"]
    assert fleet.urls(fleet.choose()) == ["turn:192.0.2.2:3478"]
