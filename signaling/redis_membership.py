"""Seats in Redis, for several signaling nodes behind one load balancer (`kijkmee serve --redis URL`).

Every change is one Lua script, which Redis runs alone, so twenty joins arriving through two nodes at
once admit exactly the room's capacity. Keys (all under a prefix, default `kijkmee:`):

    room:<room>   sorted set of peer ids, scored by arrival (a global counter, `seq`)
    peer:<peer>   hash: room, name, node, owner (Socket.IO sid; "" while held), token (SHA-256 of the
                  rejoin token), session (row id), relay ("1": relay-only room), away (0, or the time in
                  ms, Redis's clock, until which the seat is held)
    token:<hash>  the peer id a rejoin token belongs to
    node:<node>   a node's heartbeat: set every BEAT seconds with a TTL of NODE_TTL
    on:<node>     live seats of a node (set of peer ids); `nodes`: the nodes that have had any
    held          held seats (sorted set, scored by the end of their grace period)
    rooms, peers  sets of active rooms and seated peers, for the counts

The heartbeat is sent from a thread of its own (`start`), so a node whose event loop lags for seconds
under load is not taken for dead; it stops only when the loop has not turned for LOOP_STALL seconds.
A node that stops beating is dead: its live seats are freed by the next join into their room (inside
the join script) or by any live node's periodic sweep, which also frees held seats whose grace period
ended when the node that held them is gone. Times come from Redis's own clock (TIME), so the nodes'
clocks need not agree. Redis holds typed names while a call lasts: run it without persistence, and
reach it over TLS (rediss://) when it is on another machine. The scripts name their keys from the prefix
themselves, so this needs one Redis primary (with replicas or Sentinel if wanted), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signaling.errors import AlreadyJoined, RoomFull, UnknownPeer
from signaling.membership import Freed, Joined, Seat, TakenBack
from signaling.rooms import Participant
from signaling.sio_manager import redis_pool

NODE_TTL = 12.0
"""Seconds without a heartbeat after which a node counts as dead."""
BEAT = 3.0
"""Seconds between heartbeats (and sweeps)."""
LOOP_STALL = 60.0
"""Seconds the event loop may go without a turn before the heartbeat thread stops beating for it: a node
that is busy (seconds of lag under load) stays alive, a node whose loop is stuck is let die."""
SWEEP_LIMIT = 500
"""Most seats one sweep script frees, so Redis is never blocked long; the sweep repeats until done."""

_COMMON = """
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Remove a seat everywhere; {peer, room, name, session, relay, remaining peer ids...} or nil.
local function free(peer)
  local key = P .. 'peer:' .. peer
  local f = redis.call('HMGET', key, 'room', 'name', 'session', 'relay', 'node', 'token')
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'held', peer)
  redis.call('SREM', P .. 'peers', peer)
  if f[5] then redis.call('SREM', P .. 'on:' .. f[5], peer) end
  if f[6] and redis.call('GET', P .. 'token:' .. f[6]) == peer then redis.call('DEL', P .. 'token:' .. f[6]) end
  if not f[1] then return nil end
  local rkey = P .. 'room:' .. f[1]
  redis.call('ZREM', rkey, peer)
  local out = {peer, f[1], f[2] or '', f[3] or '', f[4] or '0'}
  local remaining = redis.call('ZRANGE', rkey, 0, -1)
  if #remaining == 0 then redis.call('SREM', P .. 'rooms', f[1]) end
  for _, p in ipairs(remaining) do out[#out + 1] = p end
  return out
end
-- A seat nobody will come back for: its node is dead, or it is held past its time.
local function gone(peer, now)
  local f = redis.call('HMGET', P .. 'peer:' .. peer, 'node', 'away')
  local away = tonumber(f[2] or '0')
  if away > 0 then return away <= now end
  return (not f[1]) or redis.call('EXISTS', P .. 'node:' .. f[1]) == 0
end
local function others_of(room, peer)
  local out = {}
  for _, p in ipairs(redis.call('ZRANGE', P .. 'room:' .. room, 0, -1)) do
    if p ~= peer then
      local f = redis.call('HMGET', P .. 'peer:' .. p, 'name', 'session', 'relay')
      out[#out + 1] = {p, f[1] or '', f[2] or '', f[3] or '0'}
    end
  end
  return out
end
"""

_JOIN = _COMMON + """
local room, peer, cap, node = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local freed = {}
for _, p in ipairs(redis.call('ZRANGE', P .. 'room:' .. room, 0, -1)) do
  if gone(p, now) then
    local out = free(p)
    if out then freed[#freed + 1] = out end
  end
end
if redis.call('EXISTS', P .. 'peer:' .. peer) == 1 then return {'already', freed, {}} end
if redis.call('ZCARD', P .. 'room:' .. room) >= cap then return {'full', freed, {}} end
local others = others_of(room, peer)
redis.call('ZADD', P .. 'room:' .. room, redis.call('INCR', P .. 'seq'), peer)
redis.call('HSET', P .. 'peer:' .. peer, 'room', room, 'name', ARGV[8], 'node', node, 'owner', ARGV[6],
           'token', ARGV[7], 'relay', ARGV[9], 'away', '0', 'session', '')
redis.call('SET', P .. 'token:' .. ARGV[7], peer)
redis.call('SADD', P .. 'on:' .. node, peer)
redis.call('SADD', P .. 'nodes', node)
redis.call('SADD', P .. 'rooms', room)
redis.call('SADD', P .. 'peers', peer)
return {'ok', freed, others}
"""

_SET_SESSION = """
local key = ARGV[1] .. 'peer:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'session', ARGV[3]) end
return 1
"""

_LEAVE = _COMMON + """
local peer, owner = ARGV[2], ARGV[3]
if owner ~= '' and redis.call('HGET', P .. 'peer:' .. peer, 'owner') ~= owner then return false end
return free(peer)
"""

_HOLD = _COMMON + """
local peer, owner = ARGV[2], ARGV[3]
local key = P .. 'peer:' .. peer
local f = redis.call('HMGET', key, 'owner', 'room', 'node', 'away')
if (not f[2]) or owner == '' or f[1] ~= owner or f[4] ~= '0' then return false end
local till = now_ms() + tonumber(ARGV[4])
redis.call('HSET', key, 'away', till, 'owner', '')
redis.call('SREM', P .. 'on:' .. f[3], peer)
redis.call('ZADD', P .. 'held', till, peer)
return {'ok', others_of(f[2], peer)}
"""

_RELEASE_HELD = _COMMON + """
local peer = redis.call('GET', P .. 'token:' .. ARGV[2])
if not peer then return false end
if tonumber(redis.call('HGET', P .. 'peer:' .. peer, 'away') or '0') == 0 then return false end
return free(peer)
"""

_TAKE_BACK = _COMMON + """
local tkey = P .. 'token:' .. ARGV[2]
local peer = redis.call('GET', tkey)
if not peer then return false end
local key = P .. 'peer:' .. peer
local f = redis.call('HMGET', key, 'room', 'owner', 'node', 'away', 'name', 'session', 'relay')
if f[1] ~= ARGV[3] then return false end
local node = ARGV[5]
local previous = ''
if tonumber(f[4] or '0') == 0 then
  previous = f[2] or ''
  if f[3] then redis.call('SREM', P .. 'on:' .. f[3], peer) end
end
redis.call('DEL', tkey)
redis.call('SET', P .. 'token:' .. ARGV[6], peer)
redis.call('ZREM', P .. 'held', peer)
redis.call('HSET', key, 'owner', ARGV[4], 'node', node, 'away', '0', 'token', ARGV[6])
redis.call('SADD', P .. 'on:' .. node, peer)
redis.call('SADD', P .. 'nodes', node)
return {peer, f[5] or '', f[6] or '', f[7] or '0', previous, others_of(f[1], peer)}
"""

_MEMBERS = _COMMON + """
return others_of(ARGV[2], '')
"""

_SWEEP = _COMMON + """
local limit = tonumber(ARGV[2])
local now = now_ms()
local freed = {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'node:' .. node) == 0 then
    for _, peer in ipairs(redis.call('SRANDMEMBER', P .. 'on:' .. node, limit - #freed)) do
      local out = free(peer)
      if out then freed[#freed + 1] = out end
    end
    if redis.call('SCARD', P .. 'on:' .. node) == 0 then redis.call('SREM', P .. 'nodes', node) end
  end
  if #freed >= limit then return freed end
end
for _, peer in ipairs(redis.call('ZRANGEBYSCORE', P .. 'held', '-inf', now, 'LIMIT', 0, limit - #freed)) do
  local out = free(peer)
  if out then freed[#freed + 1] = out end
end
return freed
"""


def _token_key(token: str) -> str:
    """Redis keeps a hash of the rejoin token, not the token: reading Redis gives no seat away."""
    return hashlib.sha256(token.encode()).hexdigest()


def _name(raw: str) -> str | None:
    return raw or None  # names are cleaned to None when empty (signaling.validation.clean_name)


def _session(raw: str) -> int | None:
    return int(raw) if raw else None


def _seat(room_id: str, row: list[Any]) -> Seat:
    """[peer, name, session, relay] as others_of returns it."""
    peer, name, session, relay = (str(v) for v in row[:4])
    return Seat(room_id, Participant(peer, _name(name)), _session(session), relay == "1")


def _freed(row: list[Any]) -> Freed:
    """[peer, room, name, session, relay, remaining...] as free() returns it."""
    peer, room, name, session, relay, *remaining = (str(v) for v in row)
    seat = Seat(room, Participant(peer, _name(name)), _session(session), relay == "1")
    return Freed(seat, tuple(remaining), not remaining)


class RedisMembership:
    """The Membership of every node sharing one Redis (see the module docstring for the keys)."""

    shared = True
    maintenance_interval: float | None = BEAT

    def __init__(self, client: aioredis.Redis, prefix: str = "kijkmee:", capacity: int = 3,
                 node_id: str | None = None, node_ttl: float = NODE_TTL, *, beat_url: str | None = None,
                 loop_stall: float = LOOP_STALL) -> None:
        """With `beat_url` (the same Redis as `client`), `start` beats from a thread every node_ttl / 4
        seconds; without, the heartbeat is sent by `is_live` (the maintenance loop) only."""
        if not 1 <= capacity <= 3:
            raise ValueError("capacity must be between 1 and 3")
        self.redis = client
        self.prefix = prefix
        self.capacity = capacity
        """Most people in any room; a room's own capacity can only be lower."""
        self.node_id = node_id or secrets.token_hex(8)
        self.node_ttl = node_ttl
        self._beaten = False
        self._beat_url = beat_url
        self._loop_stall = loop_stall
        self._beater: threading.Thread | None = None
        self._stop_beating = threading.Event()
        self._loop_turned = time.monotonic()
        """When the event loop last ran our tick (read by the heartbeat thread)."""
        self._ticker: asyncio.TimerHandle | None = None
        self._lapses = 0
        """Beats of the thread that found the previous heartbeat run out (written by the thread only)."""
        self._lapses_seen = 0
        self._freed_meanwhile: list[Freed] = []
        self._join = client.register_script(_JOIN)
        self._set_session = client.register_script(_SET_SESSION)
        self._leave = client.register_script(_LEAVE)
        self._hold = client.register_script(_HOLD)
        self._release_held = client.register_script(_RELEASE_HELD)
        self._take_back = client.register_script(_TAKE_BACK)
        self._members = client.register_script(_MEMBERS)
        self._sweep = client.register_script(_SWEEP)

    @classmethod
    def from_url(cls, url: str, prefix: str = "kijkmee:", capacity: int = 3) -> RedisMembership:
        """redis://host:port/db, rediss://… (TLS; ssl_ca_certs=… in the query for a private CA), unix://…"""
        client = aioredis.Redis.from_pool(redis_pool(url, decode_responses=True, health_check_interval=30))
        return cls(client, prefix, capacity, beat_url=url)

    async def _run(self, script: Any, *args: str | int | float) -> Any:
        return await script(keys=[], args=[self.prefix, *args])

    async def heartbeat(self) -> bool:
        """Say this node is alive for `node_ttl` more seconds. False when the previous heartbeat had run
        out (the others may have freed this node's seats meanwhile)."""
        key = f"{self.prefix}node:{self.node_id}"
        previous = await self.redis.set(key, "1", px=int(self.node_ttl * 1000), get=True)
        was_alive = previous is not None or not self._beaten
        self._beaten = True
        return was_alive

    async def start(self) -> None:
        await self.heartbeat()
        if self._beat_url is None or self._beater is not None:
            return
        self._tick()
        self._beater = threading.Thread(target=self._beat_forever, args=(self._beat_url,),
                                        name="kijkmee-heartbeat", daemon=True)
        self._beater.start()

    def _tick(self) -> None:
        """Note that the event loop turns, every beat (the thread beats only while it does)."""
        self._loop_turned = time.monotonic()
        self._ticker = asyncio.get_running_loop().call_later(self.node_ttl / 4, self._tick)

    def _beat_forever(self, url: str) -> None:
        """The heartbeat thread: independent of the event loop, so busy work cannot delay it."""
        interval = self.node_ttl / 4
        key = f"{self.prefix}node:{self.node_id}"
        client = redis.Redis.from_url(url, socket_timeout=interval, socket_connect_timeout=interval)
        try:
            while not self._stop_beating.wait(interval):
                if time.monotonic() - self._loop_turned > self._loop_stall:
                    continue  # the loop is stuck: let this node be taken for dead
                try:
                    if client.set(key, "1", px=int(self.node_ttl * 1000), get=True) is None:
                        self._lapses += 1
                except (RedisError, OSError):
                    continue  # Redis away for a moment: the next beat tries again
        finally:
            client.close()

    async def _stop_beater(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._beater is not None:
            self._stop_beating.set()
            await asyncio.to_thread(self._beater.join, self.node_ttl)
            self._beater = None

    async def close(self, *, forget_node: bool = False) -> None:
        """Stop. With `forget_node`, drop the heartbeat now so the others free this node's seats at once."""
        await self._stop_beater()
        try:
            if forget_node:
                await self.redis.delete(f"{self.prefix}node:{self.node_id}")
        except (RedisError, OSError):
            pass  # Redis is away: the heartbeat runs out by itself
        finally:
            await self.redis.aclose()

    async def join(self, room_id: str, participant: Participant, capacity: int, *, owner: str, token: str,
                   relay_only: bool) -> Joined:
        status, freed, others = await self._run(
            self._join, room_id, participant.id, min(self.capacity, capacity), self.node_id, owner, _token_key(token),
            participant.name or "", "1" if relay_only else "0",
        )
        gone = tuple(_freed(row) for row in freed)
        if status != "ok":
            self._freed_meanwhile.extend(gone)  # told at the next sweep (a refusal carries no seats)
            raise AlreadyJoined() if status == "already" else RoomFull()
        return Joined(tuple(_seat(room_id, row) for row in others), gone)

    async def set_session(self, peer_id: str, session_id: int) -> None:
        await self._set_session(keys=[], args=[self.prefix, peer_id, session_id])

    async def leave(self, peer_id: str, owner: str | None) -> Freed | None:
        row = await self._run(self._leave, peer_id, owner or "")
        return _freed(row) if row else None

    async def hold(self, peer_id: str, owner: str, grace_seconds: float) -> tuple[Participant, ...] | None:
        reply = await self._run(self._hold, peer_id, owner, int(grace_seconds * 1000))
        if not reply:
            return None
        return tuple(Participant(str(row[0]), _name(str(row[1]))) for row in reply[1])

    async def release_held(self, token: str) -> Freed | None:
        row = await self._run(self._release_held, _token_key(token))
        return _freed(row) if row else None

    async def held_tokens(self) -> list[str]:
        return []  # shared: another node frees them when their time is up, or the person comes back there

    async def take_back(self, token: str, room_id: str, *, owner: str, new_token: str) -> TakenBack | None:
        reply = await self._run(self._take_back, _token_key(token), room_id, owner, self.node_id,
                                _token_key(new_token))
        if not reply:
            return None
        peer, name, session, relay, previous, others = reply
        seat = Seat(room_id, Participant(str(peer), _name(str(name))), _session(str(session)), relay == "1")
        return TakenBack(seat, tuple(_seat(room_id, row).participant for row in others), str(previous) or None)

    async def members(self, room_id: str) -> tuple[Participant, ...]:
        return tuple(_seat(room_id, row).participant for row in await self._run(self._members, room_id))

    async def participant(self, peer_id: str) -> Participant | None:
        room, name = await self.redis.hmget(f"{self.prefix}peer:{peer_id}", ["room", "name"])
        return Participant(peer_id, _name(str(name or ""))) if room is not None else None

    async def check_can_signal(self, sender: str, target: str) -> None:
        if sender == target:
            raise UnknownPeer()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(f"{self.prefix}peer:{sender}", "room")
            pipe.hget(f"{self.prefix}peer:{target}", "room")
            mine, theirs = await pipe.execute()
        if mine is None or mine != theirs:
            raise UnknownPeer()

    async def counts(self) -> tuple[int, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(f"{self.prefix}rooms")
            pipe.scard(f"{self.prefix}peers")
            rooms, peers = await pipe.execute()
        return int(rooms), int(peers)

    async def sweep(self) -> list[Freed]:
        freed, self._freed_meanwhile = self._freed_meanwhile, []
        while True:
            rows = await self._run(self._sweep, SWEEP_LIMIT)
            freed.extend(_freed(row) for row in rows)
            if len(rows) < SWEEP_LIMIT:
                return freed

    async def is_live(self) -> bool:
        if self._beater is None:
            return await self.heartbeat()
        lapses = self._lapses
        lapsed, self._lapses_seen = lapses != self._lapses_seen, lapses
        return not lapsed
