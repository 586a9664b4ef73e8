-- lib.lua: helpers prepended to every operation script by coordinator/scripts.py.
-- It declares no keys of its own: each helper takes key names its caller read from KEYS.
--
-- Agent hash fields: sid (latest session), st (status of the latest session: a=active
-- e=ended r=revoked; a lapsed lease leaves 'a', which reads as expired), p (project, '' = cleared),
-- v (version), ps (session of the last write), pe (stream id of its audit event, whose
-- millisecond part is the write's server time). The writer's fencing token is part of ps.
-- Lease hash fields: sid, start, hb, exp (deadline ms), ttl (ms), meta.
-- The fencing counter is a key of its own ({ns:shard}:fence:<agent>), written only by
-- INCR, so an ACL can let a role mint tokens without letting it lower the counter.

-- Server clock in milliseconds.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as exact decimal strings (Lua's tostring switches to exponents above 1e14).
local function int(x)
  return string.format('%d', x)
end

-- Fencing token of a session id ('<token>-<nonce>@<agent>').
local function sid_token(sid)
  return string.match(sid, '^(%d+)-') or ''
end

-- Append one audit event. The fields are always written in this order so a stream
-- node stores their names once (Redis compresses entries with the master's fields).
local function audit(stream, etype, agent, sid, tok, from_p, to_p, expected, actual, ok, err, meta)
  return redis.call('XADD', stream, '*',
    'event_type', etype, 'agent_id', agent, 'session_id', sid, 'fencing_token', tok,
    'from_project', from_p, 'to_project', to_p,
    'expected_version', expected, 'actual_version', actual,
    'success', ok, 'error_message', err, 'metadata', meta)
end

-- If the agent's lease ran out (the key is gone) but is still indexed, record the
-- expiry exactly once. Returns 1 when it reaped, else 0.
local function reap_lapsed(lease_key, agent_key, index_key, stream, agent)
  if redis.call('EXISTS', lease_key) == 1 then return 0 end
  if not redis.call('ZSCORE', index_key, agent) then return 0 end
  -- The token comes from the expired session's id: start_session has already minted
  -- the next token when it reaps here.
  -- (HMGET, not HGET: the worker's ACL user reaps but has no HGET, see deploy/README.md)
  -- Reaping writes nothing to the agent hash (its status 'a' with no lease reads as
  -- expired), so the worker's ACL needs no write access to project records.
  local sid = redis.call('HMGET', agent_key, 'sid')[1]
  redis.call('ZREM', index_key, agent)
  audit(stream, 'session_expired', agent, sid or '', sid and sid_token(sid) or '', '', '', '',
        '', '1', 'lease expired', '')
  return 1
end

-- Whether token `tok` is below the agent's fencing counter: its session was superseded.
-- start_session mints a token and writes the lease in one script, so a live lease never
-- names an older token unless someone rewrote the lease hash directly (an ACL cannot
-- stop a role that writes leases from that): such a lease is never honoured.
local function fenced(fence_key, tok)
  return tonumber(tok) < tonumber(redis.call('GET', fence_key) or '0')
end

-- Why session `sid` (token `tok`) may not act for the agent. Only called when `sid`
-- is not the agent's live lease. `foreign` is '1' when the session belongs to
-- another agent.
local function dead_reason(agent_key, fence_key, sid, tok, foreign)
  if foreign == '1' then return 'session_mismatch' end
  local a = redis.call('HMGET', agent_key, 'sid', 'st')
  if a[1] == sid then
    if a[2] == 'r' then return 'revoked' end
    if a[2] == 'e' then return 'no_active_session' end
    return 'expired'
  end
  local fence = redis.call('GET', fence_key)
  if fence and tonumber(tok) < tonumber(fence) then return 'superseded' end
  return 'no_active_session'
end

-- Reservations (reserve, release_reservations, renew_reservation). Keys of a scope:
-- records (hash reservation id -> JSON {a agent, s session, m 'x'|'s', r resources as
-- given, t token, g granted ms, e deadline ms, l ttl ms, n reason; the scope's fencing
-- counter is a key of its own, rfence:<scope>), held (hash resource path -> 'x <id>' |
-- 's <id> <id> ...'), under (hash 'a'..path / 'x'..path -> holdings / exclusive holdings strictly beneath
-- path). Per shard: index (zset id -> deadline ms), ids (hash id -> scope\nsession).
-- Per agent: rsvof (hash id -> scope) lists the reservations its sessions were granted
-- in scopes of the agent's own shard, so a script that ends the agent's session can
-- release them in the same step (an entry may outlive its reservation: it is only a
-- pointer, and each is checked against the scope's records).

-- The path a resource name stands for (a trailing '/' marks a directory).
local function rsv_path(name)
  return (string.gsub(name, '/+$', ''))
end

-- The path prefixes above a path ('a/b/c' -> 'a', 'a/b'); a leading '/' is no prefix.
local function rsv_parents(path)
  local out, start = {}, 2
  while true do
    local p = string.find(path, '/', start, true)
    if not p then return out end
    out[#out + 1] = string.sub(path, 1, p - 1)
    start = p + 1
  end
end

local function rsv_overlap(a, b)
  if #a > #b then a, b = b, a end
  return a == b or string.sub(b, 1, #a + 1) == a .. '/'
end

-- One holding fewer beneath a path. (HMGET and HSET, not HGET and HINCRBY: the worker
-- and admin users release reservations but may not mint tokens, see deploy/users.acl.)
local function rsv_uncount(under_key, field)
  local n = tonumber(redis.call('HMGET', under_key, field)[1] or '0') - 1
  if n <= 0 then
    redis.call('HDEL', under_key, field)
  else
    redis.call('HSET', under_key, field, n)
  end
end

-- Remove reservation `id` (decoded record `r`) from a scope's keys and the shard's.
local function rsv_drop(rec_key, held_key, under_key, idx_key, ids_key, id, r)
  for _, name in ipairs(r.r) do
    local path = rsv_path(name)
    local h = redis.call('HMGET', held_key, path)[1]
    if h then
      local rest = {}
      for other in string.gmatch(string.sub(h, 3), '%S+') do
        if other ~= id then rest[#rest + 1] = other end
      end
      if #rest == 0 then
        redis.call('HDEL', held_key, path)
      else
        redis.call('HSET', held_key, path, string.sub(h, 1, 2) .. table.concat(rest, ' '))
      end
    end
    for _, parent in ipairs(rsv_parents(path)) do
      rsv_uncount(under_key, 'a' .. parent)
      if r.m == 'x' then rsv_uncount(under_key, 'x' .. parent) end
    end
  end
  redis.call('HDEL', rec_key, id)
  redis.call('ZREM', idx_key, id)
  redis.call('HDEL', ids_key, id)
end

-- Audit a reservation event of record `r` (the session's fencing token goes in the
-- event's fencing_token; the scope's token is in the metadata).
local function rsv_audit(stream, etype, scope, id, r, ok, err, extra)
  local meta = {scope = scope, reservation_id = id, resources = r.r,
                mode = (r.m == 'x') and 'exclusive' or 'shared', token = r.t, deadline_ms = r.e}
  if r.n and r.n ~= '' then meta.reason = r.n end
  if extra then for k, v in pairs(extra) do meta[k] = v end end
  return audit(stream, etype, r.a, r.s, sid_token(r.s), '', '', '', '', ok, err,
               cjson.encode(meta))
end

-- The scopes a script was given (ARGV names from `first_arg`, each with KEYS records,
-- held, under from `first_key` on), and the agent's listed reservations (HGETALL of
-- its rsvof key). Returns scope -> keys, the listing, and the listed scopes that were
-- not given (empty when none): a script that would end the session must then refuse
-- before writing anything, so the client can send them.
local function rsv_listed(of_key, first_key, first_arg)
  local given, k = {}, first_key
  for i = first_arg, #ARGV do
    given[ARGV[i]] = {KEYS[k], KEYS[k + 1], KEYS[k + 2]}
    k = k + 3
  end
  local of = redis.call('HGETALL', of_key)
  local missing, seen = {}, {}
  for i = 2, #of, 2 do
    local scope = of[i]
    if not given[scope] and not seen[scope] then
      seen[scope] = true
      missing[#missing + 1] = scope
    end
  end
  return given, of, missing
end

-- Release every reservation in the agent's listing `of` (see rsv_listed): the caller
-- just ended the agent's last session or found none live, so each belongs to a dead
-- session. Those of session `sid` are audited (`etype`, `message`); any of an older
-- session was superseded. (HDEL, not DEL: the worker and admin users release
-- reservations but may delete no keys of a scope, see deploy/users.acl.)
local function rsv_release_listed(of_key, of, given, idx_key, ids_key, stream, sid, etype, message)
  if #of == 0 then return 0 end
  local released = 0
  for i = 1, #of, 2 do
    local id, k = of[i], given[of[i + 1]]
    redis.call('HDEL', of_key, id)
    local raw = redis.call('HMGET', k[1], id)[1]
    if raw then
      local r = cjson.decode(raw)
      rsv_drop(k[1], k[2], k[3], idx_key, ids_key, id, r)
      if r.s == sid then
        rsv_audit(stream, etype, of[i + 1], id, r, '1', message, {by = 'session'})
      else
        rsv_audit(stream, 'reservation_released', of[i + 1], id, r, '1', 'session superseded',
                  {by = 'session'})
      end
      released = released + 1
    end
  end
  return released
end

-- Release the agent's listed reservations (see rsv_release_listed) for a script that
-- found no live lease: its latest session (agent hash sid, st) is over, and the agent
-- hash says how (a lapsed one this script reaped itself reads as expired too).
local function rsv_release_dead(of_key, of, given, agent_key, idx_key, ids_key, stream)
  if #of == 0 then return 0 end
  local a = redis.call('HMGET', agent_key, 'sid', 'st')
  local etype, message = 'reservation_expired', 'session expired'
  if a[2] == 'e' then etype, message = 'reservation_released', 'session ended' end
  if a[2] == 'r' then etype, message = 'reservation_released', 'session revoked' end
  return rsv_release_listed(of_key, of, given, idx_key, ids_key, stream, a[1], etype, message)
end
