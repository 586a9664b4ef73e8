-- end_session: end a live session (audited). Ending an already ended session is a
-- no-op that still answers 1, so a retried end is safe.
--
-- KEYS[1] lease hash of the agent     ({ns:shard}:lease:<agent>)
-- KEYS[2] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[3] lease index of the shard    ({ns:shard}:leases)
-- KEYS[4] audit stream of the shard   ({ns:shard}:events)
-- ARGV[1] agent id
-- ARGV[2] session id
-- ARGV[3] '1' when the session id belongs to another agent
--
-- Returns
--   {0, 1}   ended now, or already ended by this session
--   {0, 0}   not this agent's live session (expired, revoked, superseded, unknown)
local lease_key, agent_key, index_key, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local agent, sid, foreign = ARGV[1], ARGV[2], ARGV[3]

local live = redis.call('HGET', lease_key, 'sid')
if live == sid then
  redis.call('DEL', lease_key)
  redis.call('ZREM', index_key, agent)
  redis.call('HSET', agent_key, 'st', 'e')
  audit(stream, 'session_ended', agent, sid, sid_token(sid), '', '', '', '', '1', '', '')
  return {0, 1}
end
if not live then
  reap_lapsed(lease_key, agent_key, index_key, stream, agent)
end
if foreign ~= '1' then
  local a = redis.call('HMGET', agent_key, 'sid', 'st')
  if a[1] == sid and a[2] == 'e' then return {0, 1} end
end
return {0, 0}
