"""bench/results/relay_vs_coturn.md from the JSON results."""

from __future__ import annotations

from typing import Any

DASH = "\u2013"
X = "\u00d7"  # multiplication sign


def _f(value: float | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    if value is None:
        return DASH
    return f"{value * scale:,.{digits}f}{suffix}"


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}{X}"


def _yes(flag: bool | None) -> str:
    return "yes" if flag else "**no**"


def _generator_note(goals: dict[str, Any]) -> list[str]:
    c, o = goals.get("generator_cpu_fraction_at_coturn_max"), goals.get("generator_cpu_fraction_at_ours_max")
    if not c or not o:
        return []
    return [f"The generator core was {c[0]:.0%}{DASH}{c[1]:.0%} busy at coturn's maxima ({o[0]:.0%}{DASH}{o[1]:.0%} at "
            "ours): coturn's real maximum may lie somewhat higher; its per-core figure, normalised by its own "
            "CPU share, is the fairer one.", ""]


def _rate(run: dict[str, Any], z: int) -> str:
    if not run or run.get("error"):
        return DASH
    if z > 0:
        return _f(run["sessions"] * 2 * 1000 / z, 0)
    return _f(run.get("relayed_pps_peak_1s"), 0)


def _fast_path(machine: dict[str, Any]) -> str:
    """Whether our relay ran with turn_relay/_fastpath.c (results before it existed have no such key)."""
    built = machine.get("fast_path_built")
    return "not recorded" if built is None else ("on" if built else "not built")


def write_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    summary = results["summary"]
    goals = summary["goals"]
    out = [
        "# relay_vs_coturn",
        "",
        f"Our TURN relay (`kijkmee relay`, one asyncio process, uvloop: {m['uvloop_in_venv'] or 'not installed'}, "
        f"C fast path: {_fast_path(m)}) "
        f"against coturn {m['coturn_package']} (Debian package, `--relay-threads=1`), UDP over loopback on "
        f"{m['cpu']} ({m['cores']} cores, kernel {m['kernel']}), {m['date']}. Each server is pinned to core 0; the "
        "load generator, its echo peer and the driver to core 1. A *relayed packet* is one datagram a server "
        "forwarded: an echoed message is two (client → peer → client). CPU is the server process's utime+stime.",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| relayed packets/s per core ≥ 0.8{X} coturn (every configuration) | worst "
        f"{_ratio(goals['per_core_pps_ratio_min'])}, geometric mean {_ratio(goals['per_core_pps_ratio_geomean'])} "
        f"| {_yes(goals['pps_goal_met'])} |",
        f"| CPU per relayed packet ≤ 1.25{X} coturn (same load) | worst {_ratio(goals['cpu_per_packet_ratio_max'])}, "
        f"geometric mean {_ratio(goals['cpu_per_packet_ratio_geomean'])} | {_yes(goals['cpu_goal_met'])} |",
        "",
        f"Idle CPU (3 s at rest): coturn {_f((results.get('idle_cpu_fraction') or {}).get('coturn'), 3, 100, ' %')}, "
        f"ours {_f((results.get('idle_cpu_fraction') or {}).get('ours'), 3, 100, ' %')}. Measured runs disturbed by "
        f"other processes (> 10 % of a core, after repeats): {goals.get('tainted_runs', DASH)} of "
        f"{goals.get('runs', DASH)}. Where our relay's time goes: "
        "`bench/relay_vs_coturn/README.md`, \"Where our relay's time goes\".",
        "",
    ]
    if summary["rows"]:
        out += [
            "## Rate search (pump generator, ChannelData, ≤ 0.1 % loss)",
            "",
            "Max = highest paced rate with ≤ 0.1 % loss; *limit* says what failed first above it (server: its "
            "socket queues overflowed or it lost packets; generator: core 1 could not keep up, so the server's "
            "real maximum is higher). Per core = max ÷ the server's CPU share at that rate. CPU/packet and p99 "
            "\"same load\" are both servers at 50 % of the lower maximum; \"own 50 %\" is each at half its own.",
            "",
            *_generator_note(goals),
            "| sessions | payload | max relayed pkt/s coturn | ours | ratio | limit (c / o) "
            "| per core coturn | ours | ratio "
            "| µs CPU/pkt same load coturn | ours | ratio "
            "| p99 RTT same load coturn | ours | p99 own 50 % coturn | ours |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["rows"]:
            mp, pc, cpu = r["max_pps"], r["per_core_pps"], r["cpu_us_per_packet_same_load"]
            same, own = r["p99_rtt_us_same_load"], r["p99_rtt_us_own50"]
            out.append(
                f"| {r['sessions']} | {r['size']} B | {_f(mp['coturn'], 0)} | {_f(mp['ours'], 0)} | "
                f"{_ratio(mp['ratio'])} | {mp['limited_by']['coturn'] or DASH} / {mp['limited_by']['ours'] or DASH} | "
                f"{_f(pc['coturn'], 0)} | {_f(pc['ours'], 0)} | {_ratio(pc['ratio'])} | "
                f"{_f(cpu['coturn'], 2)} | {_f(cpu['ours'], 2)} | {_ratio(cpu['ratio'])} | "
                f"{_f(same['coturn'], 0, suffix=' µs')} | {_f(same['ours'], 0, suffix=' µs')} | "
                f"{_f(own['coturn'], 0, suffix=' µs')} | {_f(own['ours'], 0, suffix=' µs')} |")
        out.append("")
    if results["uclient"]:
        out += [
            "## turnutils_uclient (coturn's load tool, `-c`, turnutils_peer as echo peer)",
            "",
            f"`-z 20`: each session sends one message per 20 ms (sessions {X} 100 relayed pkt/s offered, shown as "
            "pkt/s). "
            "`-z 0`: unpaced (up to 50 messages per session per 1 ms tick; pkt/s is the highest rate over 1 s). "
            "Sessions run in processes of 25, each from its own loopback address. "
            "CPU from the end of connecting to the "
            f"final counts, per relayed packet (2 {X} echoes received).",
            "",
            "| sessions | payload | -z | coturn loss | ours loss | coturn pkt/s | ours pkt/s "
            "| coturn µs/pkt | ours µs/pkt | CPU ratio |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        runs: dict[tuple[int, int, int], dict[str, dict[str, Any]]] = {}
        for run in results["uclient"]:
            runs.setdefault((run["sessions"], run["size"], run["z"]), {})[run["server"]] = run
        for (sessions, size, z), pair in runs.items():
            c, o = pair.get("coturn", {}), pair.get("ours", {})
            ratio = (o["cpu_us_per_packet"] / c["cpu_us_per_packet"]
                     if o.get("cpu_us_per_packet") and c.get("cpu_us_per_packet") else None)
            out.append(
                f"| {sessions} | {size} B | {z} | {_f(c.get('loss'), 3, 100, ' %')} "
                f"| {_f(o.get('loss'), 3, 100, ' %')} "
                f"| {_rate(c, z)} | {_rate(o, z)} "
                f"| {_f(c.get('cpu_us_per_packet'), 2)} | {_f(o.get('cpu_us_per_packet'), 2)} | {_ratio(ratio)} |")
        out.append("")
    memory = results.get("memory") or {}
    if memory:
        out += [
            "## Memory",
            "",
            "RSS growth of a fresh server for N allocations, each with one permission and one channel "
            "(kernel socket buffers are not in RSS, for either server; our relay holds one UDP socket per allocation, "
            "coturn too).",
            "",
            "| server | allocations | RSS before | RSS after | bytes per allocation | without the channel |",
            "|---|---|---|---|---|---|",
        ]
        for name in ("coturn", "ours"):
            r = memory.get(name)
            if r:
                out.append(f"| {name} | {r['with_channel']:,} | {r['rss_kib_before']['VmRSS']:,} KiB | "
                           f"{r['rss_kib_after_channels']['VmRSS']:,} KiB | {r['bytes_per_allocation']:,.0f} | "
                           f"{r['bytes_per_allocation_without_channel']:,.0f} |")
        if goals.get("memory_per_allocation_ratio"):
            out.append(f"\nOurs ÷ coturn: {goals['memory_per_allocation_ratio']:.2f}{X}.")
        out.append("")
    out += [
        "## How",
        "",
        f"`{results['commands']['rerun']}`. Raw figures, every probe, commands and machine details: "
        "`relay_vs_coturn.json`. Method and caveats: `bench/relay_vs_coturn/README.md`.",
        f"Took {results['elapsed_seconds']:.0f} s"
        + (" (interrupted: partial)." if results.get("interrupted") else "."),
        "",
    ]
    return "\n".join(out)
