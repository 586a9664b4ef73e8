-- start_session: begin a session for an agent and mint its next fencing token.
-- A live session of the same agent is superseded (audited) unless exclusive.
--
-- KEYS[1] lease hash of the agent     ({ns:shard}:lease:<agent>)
-- KEYS[2] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[3] lease index of the shard    ({ns:shard}:leases)
-- KEYS[4] audit stream of the shard   ({ns:shard}:events)
-- KEYS[5] fencing counter of the agent ({ns:shard}:fence:<agent>)
-- KEYS[6] the agent's reservations in its shard ({ns:shard}:rsvof:<agent>)
-- KEYS[7] reservation index, KEYS[8] reservation ids of the shard (rsvidx, rsvids)
-- KEYS[9..] records, held and under keys of each scope in ARGV[6..]
-- ARGV[1] agent id
-- ARGV[2] nonce (16 hex characters) that makes the session id unguessable
-- ARGV[3] lease TTL in milliseconds
-- ARGV[4] '1' = exclusive: refuse when a live session exists
-- ARGV[5] metadata as JSON ('' = none)
-- ARGV[6..] scopes of the shard the agent may hold reservations in (see rsv_listed)
--
-- The reservations listed in KEYS[6] all belong to sessions that are over once this
-- one starts (superseded, lapsed, ended): they are released in this same script.
--
-- Returns
--   {0, token, now_ms, deadline_ms}   started; the session id is '<token>-<nonce>@<agent>'
--   {3, deadline_ms}                  exclusive and a live session exists (audited)
--   {9, scope...}                     nothing done: the agent holds reservations in these
--                                     scopes too
local lease_key, agent_key, index_key, stream, fence_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local of_key, idx_key, ids_key = KEYS[6], KEYS[7], KEYS[8]
local agent, nonce, ttl, exclusive, meta = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]

local live = redis.call('HMGET', lease_key, 'sid', 'exp')
if live[1] and exclusive == '1' then
  audit(stream, 'session_refused', agent, '', '', '', '', '', '', '0',
        'a live session exists', meta)
  return {3, tonumber(live[2])}
end
local given, of, missing = rsv_listed(of_key, 9, 6)
if #missing > 0 then return {9, unpack(missing)} end

-- Minting the token is the first write, so a caller whose ACL lacks INCR on the fence
-- (the worker and admin users) is refused before anything changed (Redis does not roll
-- a script back when a command inside it is refused).
local token = int(redis.call('INCR', fence_key))
if live[1] then
  audit(stream, 'session_superseded', agent, live[1], sid_token(live[1]), '', '', '', '', '1',
        'superseded by a new session', '')
  rsv_release_listed(of_key, of, given, idx_key, ids_key, stream, live[1],
                     'reservation_released', 'session superseded')
else
  reap_lapsed(lease_key, agent_key, index_key, stream, agent)
  rsv_release_dead(of_key, of, given, agent_key, idx_key, ids_key, stream)
end
local sid = token .. '-' .. nonce .. '@' .. agent
-- The start is audited first and its event's millisecond is the session's start: one
-- clock reading for both (TIME and XADD read the clock apart and could straddle a
-- millisecond). A stream id is never behind the clock, so the lease is never short.
local id = audit(stream, 'session_started', agent, sid, token, '', '', '', '', '1', '', meta)
local now = tonumber(string.match(id, '^(%d+)'))
local deadline = now + ttl
redis.call('HSET', lease_key, 'sid', sid, 'start', int(now), 'hb', int(now),
           'exp', int(deadline), 'ttl', int(ttl), 'meta', meta)
redis.call('PEXPIREAT', lease_key, int(deadline))
redis.call('ZADD', index_key, int(deadline), agent)
redis.call('HSET', agent_key, 'sid', sid, 'st', 'a')
return {0, tonumber(token), now, deadline}
