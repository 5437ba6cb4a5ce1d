"""Prometheus text at /metrics and a health answer at /healthz for one relay node (aiohttp)."""

from __future__ import annotations

from aiohttp import web

from turn_relay.node import RelayNode

NODE_KEY = web.AppKey("relay_node", RelayNode)

# Counter names of RelayMetrics.snapshot() that are labelled families: "drops.<reason>" etc.
_LABELLED = {"drops": "reason", "requests": "method", "errors_sent": "code"}


def render(node: RelayNode) -> str:
    """Prometheus exposition text. Holds counts only: no address, user name or peer."""
    lines: list[str] = []
    families: dict[str, list[tuple[str, int]]] = {}
    for name, value in node.server.metrics.snapshot().items():
        family, _, label = name.partition(".")
        families.setdefault(family, []).append((label, value))
    for family, samples in sorted(families.items()):
        metric = f"kijkmee_relay_{family}_total"
        lines.append(f"# TYPE {metric} counter")
        for label, value in samples:
            labels = f'{{{_LABELLED.get(family, "kind")}="{label}"}}' if label else ""
            lines.append(f"{metric}{labels} {value}")
    gauges = {
        "allocations": len(node.server.allocations),
        "relay_ports_open": node.counters.relay_ports_open,
        "stream_connections": len(node.streams),
        "draining": int(node.draining),
    }
    for name, value in gauges.items():
        lines += [f"# TYPE kijkmee_relay_{name} gauge", f"kijkmee_relay_{name} {value}"]
    for name in ("datagrams_in", "datagrams_out", "send_errors", "stream_bad_frames", "stream_overflow_drops"):
        metric = f"kijkmee_relay_io_{name}_total"
        lines += [f"# TYPE {metric} counter", f"{metric} {getattr(node.counters, name)}"]
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render(request.app[NODE_KEY]), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """200 while the node takes new allocations, 503 while it drains (so a balancer skips it)."""
    node = request.app[NODE_KEY]
    body = {"status": "draining" if node.draining else "ok", "allocations": len(node.server.allocations)}
    return web.json_response(body, status=503 if node.draining else 200)


def create_exporter(node: RelayNode) -> web.Application:
    app = web.Application()
    app[NODE_KEY] = node
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
