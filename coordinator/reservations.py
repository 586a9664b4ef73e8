"""Resource reservations: the pure operations (no I/O) behind ``reserve`` and friends.

A scope's reservations live in the shard slot of the scope's name, so a claim of many
resources is one script (``lua/reserve.lua``) on a cluster too, and its audit event goes
to that shard's stream. A reservation belongs to a session, whose lease lives in the
agent's shard: when both share a slot the script checks the lease itself; otherwise
the plan reads the lease first. A holder whose session has died is released before it
can block a claim (the plan checks the holders a refusal names, in their own slots),
and the worker's reaper (:meth:`ReservationCore.reap`) releases the reservations of
dead sessions and lapsed deadlines within a second.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

from coordinator import validation
from coordinator.calls import Batch, Command, Plan, Script, Sleep
from coordinator.errors import (
    InvalidInputError,
    RequestIdReusedError,
    ReservationConflict,
    ReservationNotHeld,
    SessionLeaseExpired,
    UnexpectedReply,
)
from coordinator.keys import AgentKeys, KeySpace, ScopeKeys
from coordinator.models import Reservation, ReservationHolder
from coordinator.timestamps import ms_to_datetime, time_reply_ms

GRANTED: Final = 0
LEASE: Final = 2
REQUEST_REUSED: Final = 4
REFUSED: Final = 5
WAITING: Final = 6
NOT_HELD: Final = 8
#: A script that would end an agent's session was not given every scope it holds
#: reservations in (they are released in the same script); nothing was done.
SCOPES_NEEDED: Final = 9
#: Rounds of a session's end that learn reservation scopes from the script's refusal:
#: each round adds at least one, so this bounds a race with the agent's own reserves.
MAX_SCOPE_ROUNDS: Final = 8

#: A queued claim whose client stopped polling this long is dropped from the queue (ms).
WAIT_STALE_MS: Final = 2000
#: First and longest pause between two polls of a queued claim (s).
WAIT_POLL_FIRST: Final = 0.002
WAIT_POLL_CAP: Final = 0.05

_MODES: Final[dict[str, Literal["exclusive", "shared"]]] = {"x": "exclusive", "s": "shared"}

#: Why a dead session's reservations go: event type and message, by the reason its
#: lease cannot act (see ``dead_reason`` in lua/lib.lua).
_DEATHS: Final = {
    "no_active_session": ("reservation_released", "session ended"),
    "revoked": ("reservation_released", "session revoked"),
    "superseded": ("reservation_released", "session superseded"),
    "expired": ("reservation_expired", "session expired"),
}


def _holders(raw: str, now_ms: int, waiting: bool = False) -> list[ReservationHolder]:
    items = json.loads(raw)
    if not isinstance(items, list):  # cjson writes an empty table as {}
        return []
    return [
        ReservationHolder(
            agent_id=item["a"],
            session_id=item["s"],
            reservation_id=None if waiting else item["id"],
            resources=list(item["r"]),
            mode=_MODES[item["m"]],
            expires_in=None if waiting else max(0.0, (int(item["e"]) - now_ms) / 1000),
            waiting=waiting,
        )
        for item in items
    ]


def session_death(
    sid: str, lease_sid: str | None, agent_sid: str | None, status: str | None
) -> str | None:
    """None while ``sid`` holds its agent's lease, else why it cannot act (the reasons
    of ``SessionLeaseExpired``), from the lease's and the agent hash's fields."""
    if lease_sid == sid:
        return None
    if agent_sid == sid:
        return {"r": "revoked", "e": "no_active_session"}.get(status or "", "expired")
    return "superseded" if agent_sid else "no_active_session"


def record_reservation(scope: str, rid: str, record: dict[str, Any]) -> Reservation:
    """A :class:`Reservation` from its stored JSON record."""
    sid = record["s"]
    return Reservation(
        reservation_id=rid,
        scope=scope,
        resources=list(record["r"]),
        mode=_MODES[record["m"]],
        fencing_token=int(record["t"]),
        agent_id=record["a"],
        session_id=sid,
        granted_at=ms_to_datetime(int(record["g"])),
        expires_at=ms_to_datetime(int(record["e"])),
        ttl=int(record["l"]) / 1000,
        reason=record.get("n") or None,
    )


class ReservationCore:
    """Builds the reservation operations of one namespace (pure, no I/O)."""

    def __init__(self, keys: KeySpace, lease_ttl_ms: int, request_ttl_ms: int) -> None:
        self.keys = keys
        self.lease_ttl_ms = lease_ttl_ms
        self.request_ttl_ms = request_ttl_ms
        #: What this client granted, by agent: reservation id -> (scope, session, whether
        #: the scope is in the agent's shard). Release and renew need no lookup for
        #: them, and the end of a session knows what to release (hints only: every
        #: script checks the id in its scope).
        self._granted: OrderedDict[str, dict[str, tuple[str, str, bool]]] = OrderedDict()

    def _remember(self, rid: str, scope: str, session_id: str, in_slot: bool) -> None:
        agent = session_id.partition("@")[2]
        entries = self._granted.setdefault(agent, {})
        self._granted.move_to_end(agent)
        entries[rid] = (scope, session_id, in_slot)
        if len(entries) > 4096:  # bounded: the oldest hint goes
            del entries[next(iter(entries))]
        if len(self._granted) > 8192:
            self._granted.popitem(last=False)

    def _cached(self, agent: str, rid: str, forget: bool = False) -> str | None:
        """The scope of reservation ``rid`` if this client granted it to ``agent``."""
        entries = self._granted.get(agent)
        if not entries:
            return None
        found = entries.pop(rid, None) if forget else entries.get(rid)
        return None if found is None else found[0]

    def listed_here(self, agent_id: object) -> tuple[str, ...]:
        """Scopes of the agent's shard this client granted it reservations in (a hint
        for the script that ends its session, which names any others it needs)."""
        entries = self._granted.get(agent_id) if isinstance(agent_id, str) else None
        if not entries:
            return ()
        return tuple(sorted({scope for scope, _, in_slot in entries.values() if in_slot}))

    def release_ended(self, agent_id: str, live: str | None, message: str) -> Plan[int]:
        """After a script ended the agent's session (``live``: the session that now
        holds its lease, if any): what that script released (the agent's own shard) is
        forgotten, and what this client granted the agent's other sessions in scopes of
        other shards is released at once, instead of leaving it to the worker's reaper
        (best effort: the reaper still covers it). ``message`` names the ending."""
        entries = self._granted.get(agent_id)
        if not entries:
            return 0
        released = 0
        for rid, (scope, sid, in_slot) in list(entries.items()):
            if sid == live:
                continue
            del entries[rid]
            if not in_slot:
                call = self._release_call(
                    self.keys.scope_keys(scope), scope, "session", sid,
                    "reservation_released", message, "session", (rid,),
                )  # fmt: skip
                released += int((yield call))
        if not entries:
            self._granted.pop(agent_id, None)
        return released

    def scope_keys_of(self, shard: int, scopes: Sequence[str]) -> list[str]:
        """Records, held and under keys of each scope, all of ``shard``."""
        keys: list[str] = []
        for scope in scopes:
            sk = self.keys.scope_keys(scope)
            if sk.shard != shard:
                raise InvalidInputError("scopes", f"scope {scope!r} is not in the agent's shard")
            keys += (sk.records, sk.held, sk.under)
        return keys

    def ending(self, ak: AgentKeys, scopes: Sequence[str]) -> tuple[list[str], list[str]]:
        """The extra KEYS and ARGV of a script that ends the agent's session: its
        listing, the shard's reservation keys and each given scope's keys (the script
        releases what the listing names, and refuses when one of its scopes is missing)."""
        names = [validation.scope(scope) for scope in scopes]
        keys = [
            ak.listed,
            self.keys.reservation_index(ak.shard),
            self.keys.reservation_ids(ak.shard),
        ]
        return keys + self.scope_keys_of(ak.shard, names), names

    def _session(self, agent_id: str, session_id: str) -> tuple[str, str]:
        agent = validation.agent_id(agent_id)
        owner, _ = validation.session_id(session_id)
        if owner != agent:
            raise SessionLeaseExpired(agent, session_id, "session_mismatch")
        return agent, session_id

    def _lease_check(self, agent: str, sid: str, scope_shard: int) -> Plan[tuple[bool, int | None]]:
        """Where the lease is in the scope's slot, the script checks it (True);
        otherwise read it here first. Returns (in_slot, the lease's ttl in ms)."""
        ak = self.keys.agent_keys(agent)
        if ak.shard == scope_shard:
            return True, None
        lease, record = yield Batch(
            (Command("hmget", (ak.lease, "sid", "ttl")), Command("hmget", (ak.agent, "sid", "st")))
        )
        death = session_death(sid, lease[0], record[0], record[1])
        if death is not None:
            raise SessionLeaseExpired(agent, sid, death)  # type: ignore[arg-type]
        return False, int(lease[1])

    # --- reserve --------------------------------------------------------------------

    def reserve(
        self,
        agent_id: str,
        session_id: str,
        scope: str,
        resources: Sequence[str],
        mode: str,
        ttl: float | None,
        reason: str | None,
        wait: float | None,
        request_id: str | None,
    ) -> Plan[Reservation]:
        agent, sid = self._session(agent_id, session_id)
        scope = validation.scope(scope)
        names = validation.resources(resources)
        letter = validation.reservation_mode(mode)
        ttl_ms = None if ttl is None else round(validation.ttl_seconds(ttl) * 1000)
        why = validation.reservation_reason(reason)
        wait_s = validation.wait_seconds(wait)
        rid_request = None if request_id is None else validation.request_id(request_id)
        sk = self.keys.scope_keys(scope)
        in_slot, lease_ttl = yield from self._lease_check(agent, sid, sk.shard)
        if ttl_ms is None and lease_ttl is not None:
            ttl_ms = lease_ttl
        keys: tuple[str, ...] = (*sk.script_keys, sk.fence)
        if in_slot:
            ak = self.keys.agent_keys(agent)
            keys += (ak.lease, ak.agent, ak.fence, ak.listed)
        fingerprint, req_ttl = "", ""
        if rid_request is not None:
            keys += (self.keys.reservation_request(scope, agent, rid_request),)
            req_ttl = str(self.request_ttl_ms)
            fingerprint = hashlib.sha1(
                json.dumps([scope, letter, ttl_ms, why, names]).encode()
            ).hexdigest()
        rid = f"{sk.shard}.{secrets.token_hex(8)}"
        ticket = f"new:{WAIT_STALE_MS}" if wait_s else ""
        audit, poll = "0", WAIT_POLL_FIRST
        checked: set[tuple[str, str]] = set()
        deadline_ms: int | None = None
        while True:
            args = (
                agent, sid, scope, letter, "" if ttl_ms is None else ttl_ms, why, rid,
                "1" if in_slot else "0", req_ttl, fingerprint, ticket, audit, *names,
            )  # fmt: skip
            reply = yield Script("reserve", keys, args, retry=rid_request is not None)
            code = int(reply[0])
            if code == GRANTED:
                self._remember(str(reply[1]), scope, sid, in_slot)
                return Reservation(
                    reservation_id=str(reply[1]),
                    scope=scope,
                    resources=list(names),
                    mode=_MODES[letter],
                    fencing_token=int(reply[2]),
                    agent_id=agent,
                    session_id=sid,
                    granted_at=ms_to_datetime(int(reply[3])),
                    expires_at=ms_to_datetime(int(reply[4])),
                    ttl=int(reply[5]) / 1000,
                    reason=why or None,
                )
            if code == LEASE:
                raise SessionLeaseExpired(agent, sid, reply[1])
            if code == REQUEST_REUSED and rid_request is not None:
                raise RequestIdReusedError(rid_request)
            if code == REFUSED:
                now_ms, raw_holders, raw_waiting = int(reply[1]), reply[2], reply[3]
            elif code == WAITING:
                ticket_no, now_ms, raw_holders, raw_waiting = (
                    reply[1],
                    int(reply[2]),
                    reply[3],
                    reply[4],
                )
            else:
                raise UnexpectedReply(f"unknown script reply {reply!r}")
            if code == WAITING:
                ticket = f"{ticket_no}:{WAIT_STALE_MS}"
            holders = _holders(raw_holders, now_ms)
            fresh = {(h.agent_id, h.session_id) for h in holders} - checked
            if fresh:
                dead = yield from self._dead_sessions(fresh)
                checked |= fresh - set(dead)
                if dead:
                    gone = [h for h in holders if (h.agent_id, h.session_id) in dead]
                    yield from self._release_dead(sk, scope, gone, dead)
                    continue  # claim again at once: the dead holders are gone
            if code == REFUSED:
                if audit == "0":
                    audit = "1"  # every holder is live: claim once more, auditing a refusal
                    continue
                raise ReservationConflict(
                    scope, names, holders, _holders(raw_waiting, now_ms, True)
                )
            if deadline_ms is None:
                deadline_ms = now_ms + round((wait_s or 0) * 1000)
            if now_ms >= deadline_ms:
                ticket, audit = f"{ticket_no}:0", "1"
                continue
            yield Sleep(min(poll, max(0.001, (deadline_ms - now_ms) / 1000)))
            poll = min(poll * 2, WAIT_POLL_CAP)

    def _dead_sessions(
        self, sessions: Iterable[tuple[str, str]]
    ) -> Plan[dict[tuple[str, str], str]]:
        """The sessions among ``sessions`` (agent, session id) that cannot act, with why."""
        pairs = sorted(sessions)
        commands: list[Command] = []
        for agent, _ in pairs:
            ak = self.keys.agent_keys(agent)
            commands += (
                Command("hmget", (ak.lease, "sid")),
                Command("hmget", (ak.agent, "sid", "st")),
            )
        replies = yield Batch(tuple(commands))
        dead = {}
        for i, (agent, sid) in enumerate(pairs):
            record = replies[2 * i + 1]
            death = session_death(sid, replies[2 * i][0], record[0], record[1])
            if death is not None:
                dead[(agent, sid)] = death
        return dead

    def _release_dead(
        self,
        sk: ScopeKeys,
        scope: str,
        holders: Sequence[ReservationHolder],
        dead: dict[tuple[str, str], str],
    ) -> Plan[int]:
        by_session: dict[tuple[str, str], list[str]] = defaultdict(list)
        for h in holders:
            if h.reservation_id is not None:
                by_session[(h.agent_id, h.session_id)].append(h.reservation_id)
        released = 0
        for (agent, sid), rids in by_session.items():
            etype, message = _DEATHS[dead[(agent, sid)]]
            released += int(
                (
                    yield self._release_call(
                        sk, scope, "session", sid, etype, message, "session", rids
                    )
                )
            )
        return released

    def _release_call(
        self,
        sk: ScopeKeys,
        scope: str,
        which: str,
        sid: str,
        etype: str,
        message: str,
        by: str,
        rids: Sequence[str],
        owners: Iterable[str] = (),
    ) -> Script:
        """``owners``: agents that may hold ``rids`` besides ``sid``'s; those of the
        scope's shard have the released ids taken off their listing (rsvof)."""
        agents = {sid.partition("@")[2], *owners} - {""}
        listed = sorted(a for a in agents if self.keys.shard_of(a) == sk.shard)
        keys: tuple[str, ...] = (sk.records, sk.held, sk.under, sk.index, sk.ids, sk.stream)
        keys += tuple(self.keys.agent_keys(a).listed for a in listed)
        # Each reservation is released (and audited) once however often this runs.
        return Script(
            "release_reservations",
            keys,
            (which, sid, etype, message, by, scope, len(listed), *listed, *rids),
            retry=True,
        )

    # --- release and renew ------------------------------------------------------------

    def _scope_of(self, rid: str, shard: int) -> Plan[tuple[str, str] | None]:
        """(scope, holder session) of a reservation still held, else None."""
        (entry,) = yield Command("hmget", (self.keys.reservation_ids(shard), rid))
        if not entry:
            return None
        scope, _, holder = str(entry).partition("\n")
        return scope, holder

    def release(self, agent_id: str, session_id: str, reservation_id: str) -> Plan[bool]:
        """Release a reservation of the session; False when it holds no such one."""
        agent, sid = self._session(agent_id, session_id)
        rid, shard = validation.reservation_id(reservation_id)
        scope = self._cached(agent, rid, forget=True)
        if scope is not None:
            call = self._release_call(
                self.keys.scope_keys(scope), scope, "session", sid,
                "reservation_released", "", "holder", (rid,),
            )  # fmt: skip
            if int((yield call)):
                return True
        found = yield from self._scope_of(rid, shard)
        if found is None or found[1] != sid:
            return False
        scope = found[0]
        call = self._release_call(
            self.keys.scope_keys(scope), scope, "session", sid,
            "reservation_released", "", "holder", (rid,),
        )  # fmt: skip
        return bool(int((yield call)))

    def release_by_operator(self, reservation_id: str, reason: str) -> Plan[bool]:
        """Operator action: release any reservation (audited with ``reason``)."""
        rid, shard = validation.reservation_id(reservation_id)
        text = validation.reason(reason)
        found = yield from self._scope_of(rid, shard)
        if found is None:
            return False
        scope, holder = found
        call = self._release_call(
            self.keys.scope_keys(scope), scope, "any", "",
            "reservation_released", text, "operator", (rid,), (holder.partition("@")[2],),
        )  # fmt: skip
        return bool(int((yield call)))

    def renew(
        self, agent_id: str, session_id: str, reservation_id: str, ttl: float | None
    ) -> Plan[Reservation]:
        """Move the reservation's deadline ``ttl`` (default: its own ttl) from now."""
        agent, sid = self._session(agent_id, session_id)
        rid, shard = validation.reservation_id(reservation_id)
        ttl_arg = "" if ttl is None else round(validation.ttl_seconds(ttl) * 1000)
        scope = self._cached(agent, rid)
        if scope is None:
            found = yield from self._scope_of(rid, shard)
            if found is None or found[1] != sid:
                raise ReservationNotHeld(rid)
            scope = found[0]
        sk = self.keys.scope_keys(scope)
        in_slot, _ = yield from self._lease_check(agent, sid, sk.shard)
        keys: tuple[str, ...] = (sk.records, sk.index)
        if in_slot:
            ak = self.keys.agent_keys(agent)
            keys += (ak.lease, ak.agent, ak.fence)
        reply = yield Script(
            "renew_reservation", keys, (rid, sid, ttl_arg, "1" if in_slot else "0"), retry=True
        )
        code = int(reply[0])
        if code == LEASE:
            raise SessionLeaseExpired(agent, sid, reply[1])
        if code == NOT_HELD:
            self._cached(agent, rid, forget=True)
            raise ReservationNotHeld(rid)
        if code != GRANTED:
            raise UnexpectedReply(f"unknown script reply {reply!r}")
        return record_reservation(scope, rid, json.loads(reply[5]))

    def renew_session(
        self, agent_id: str, session_id: str, ttl: float | None = None
    ) -> Plan[list[Reservation]]:
        """Renew every reservation the session holds (the keep-alive's companion)."""
        agent, sid = self._session(agent_id, session_id)
        held = yield from self.listing(None, agent)
        renewed = []
        for reservation in held:
            if reservation.session_id != sid:
                continue
            try:
                renewed.append((yield from self.renew(agent, sid, reservation.reservation_id, ttl)))
            except ReservationNotHeld:
                continue
        return renewed

    # --- reads ----------------------------------------------------------------------

    def listing(self, scope: str | None, agent_id: str | None) -> Plan[list[Reservation]]:
        """Live reservations, of one scope or all, optionally of one agent."""
        agent = None if agent_id is None else validation.agent_id(agent_id)
        if scope is not None:
            scope = validation.scope(scope)
            now_ms = time_reply_ms((yield Command("time")))
            records = yield Command("hgetall", (self.keys.scope_keys(scope).records,))
            found = _live(scope, records, now_ms)
        else:
            now_ms = time_reply_ms((yield Command("time")))
            replies = yield Batch(
                tuple(
                    Command("hgetall", (self.keys.reservation_ids(s),))
                    for s in range(self.keys.shards)
                )
            )
            by_scope: dict[str, list[str]] = defaultdict(list)
            for ids in replies:
                for rid, entry in ids.items():
                    scope_name, _, holder = entry.partition("\n")
                    if agent is None or holder.endswith("@" + agent):
                        by_scope[scope_name].append(rid)
            scopes = sorted(by_scope)
            found = []
            if scopes:
                records = yield Batch(
                    tuple(
                        Command("hmget", (self.keys.scope_keys(s).records, *by_scope[s]))
                        for s in scopes
                    )
                )
                for s, values in zip(scopes, records, strict=True):
                    pairs = {
                        rid: v for rid, v in zip(by_scope[s], values, strict=True) if v is not None
                    }
                    found += _live(s, pairs, now_ms)
        if agent is not None:
            found = [r for r in found if r.agent_id == agent]
        found.sort(key=lambda r: (r.scope, r.fencing_token))
        return found

    def holders(self, scope: str, resource: str) -> Plan[list[Reservation]]:
        """Live reservations of ``scope`` that hold ``resource``, a path above it or one
        beneath it."""
        scope = validation.scope(scope)
        (name,) = validation.resources([resource])
        key = validation.resource_key(name)
        held = yield from self.listing(scope, None)
        return [
            r
            for r in held
            if any(validation.overlapping(key, validation.resource_key(n)) for n in r.resources)
        ]

    # --- the worker's reaper ------------------------------------------------------------

    def reap(self) -> Plan[int]:
        """Release the reservations whose deadline passed (``reservation_expired``) and
        those of sessions that can no longer act (ended, revoked, superseded:
        ``reservation_released``; expired: ``reservation_expired``). Returns how many
        this call released. One ``EXISTS`` per shard, pipelined, when nothing is held
        (what the lease reaper's idle pass costs)."""
        found = yield Batch(
            tuple(
                Command("exists", (self.keys.reservation_ids(s),)) for s in range(self.keys.shards)
            )
        )
        shards = [s for s, exists in enumerate(found) if int(exists)]
        if not shards:
            return 0
        now_ms = time_reply_ms((yield Command("time")))
        replies = yield Batch(
            tuple(
                c
                for s in shards
                for c in (
                    Command("hgetall", (self.keys.reservation_ids(s),)),
                    Command(
                        "zrange", (self.keys.reservation_index(s), 0, -1), {"withscores": True}
                    ),
                )
            )
        )
        lapsed: dict[str, list[str]] = defaultdict(list)
        lapsed_owners: dict[str, set[str]] = defaultdict(set)
        held: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for i in range(len(shards)):
            ids, deadlines = replies[2 * i], replies[2 * i + 1]
            due = {rid for rid, score in deadlines if int(score) <= now_ms}
            for rid, entry in ids.items():
                scope, _, sid = entry.partition("\n")
                owner = sid.partition("@")[2]
                if rid in due:
                    lapsed[scope].append(rid)
                    lapsed_owners[scope].add(owner)
                    continue
                if owner:
                    held[(owner, sid)][scope].append(rid)
        released = 0
        for scope, rids in lapsed.items():
            call = self._release_call(
                self.keys.scope_keys(scope), scope, "lapsed", "",
                "reservation_expired", "reservation expired", "ttl", rids, lapsed_owners[scope],
            )  # fmt: skip
            released += int((yield call))
        if held:
            dead = yield from self._dead_sessions(held)
            for session, reason in dead.items():
                etype, message = _DEATHS[reason]
                for scope, rids in held[session].items():
                    call = self._release_call(
                        self.keys.scope_keys(scope), scope, "session", session[1],
                        etype, message, "session", rids,
                    )  # fmt: skip
                    released += int((yield call))
        return released


def _live(scope: str, records: dict[str, str], now_ms: int) -> list[Reservation]:
    found = []
    for rid, raw in records.items():
        if rid == "#":  # where the scope's fencing counter lived before its own key
            continue
        record = json.loads(raw)
        if int(record["e"]) > now_ms:
            found.append(record_reservation(scope, rid, record))
    return found
