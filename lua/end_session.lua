-- end_session: end a live session (audited). Ending an already ended session is a
-- no-op that still answers 1, so a retried end is safe.
--
-- KEYS[1] lease hash of the agent     ({ns:shard}:lease:<agent>)
-- KEYS[2] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[3] lease index of the shard    ({ns:shard}:leases)
-- KEYS[4] audit stream of the shard   ({ns:shard}:events)
-- ARGV[1] agent id
-- ARGV[2] session id
-- KEYS[5] the agent's reservations in its shard ({ns:shard}:rsvof:<agent>)
-- KEYS[6] reservation index, KEYS[7] reservation ids of the shard (rsvidx, rsvids)
-- KEYS[8..] records, held and under keys of each scope in ARGV[4..]
-- ARGV[1] agent id
-- ARGV[2] session id
-- ARGV[3] '1' when the session id belongs to another agent
-- ARGV[4..] scopes of the shard the agent may hold reservations in (see rsv_listed)
--
-- Ending the session (or finding it lapsed) releases its reservations listed in
-- KEYS[5] in this same script.
--
-- Returns
--   {0, 1}   ended now, or already ended by this session
--   {0, 0}   not this agent's live session (expired, revoked, superseded, unknown)
--   {9, scope...}   nothing done: the agent holds reservations in these scopes too
local lease_key, agent_key, index_key, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local of_key, idx_key, ids_key = KEYS[5], KEYS[6], KEYS[7]
local agent, sid, foreign = ARGV[1], ARGV[2], ARGV[3]

local given, of, missing = rsv_listed(of_key, 8, 4)
if #missing > 0 then return {9, unpack(missing)} end
local live = redis.call('HGET', lease_key, 'sid')
if live == sid then
  redis.call('DEL', lease_key)
  redis.call('ZREM', index_key, agent)
  redis.call('HSET', agent_key, 'st', 'e')
  audit(stream, 'session_ended', agent, sid, sid_token(sid), '', '', '', '', '1', '', '')
  rsv_release_listed(of_key, of, given, idx_key, ids_key, stream, sid,
                     'reservation_released', 'session ended')
  return {0, 1}
end
if not live then
  reap_lapsed(lease_key, agent_key, index_key, stream, agent)
  rsv_release_dead(of_key, of, given, agent_key, idx_key, ids_key, stream)
end
if foreign ~= '1' then
  local a = redis.call('HMGET', agent_key, 'sid', 'st')
  if a[1] == sid and a[2] == 'e' then return {0, 1} end
end
return {0, 0}
