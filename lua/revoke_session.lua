-- revoke_session: an operator ends the agent's live session, with a reason (audited).
-- The revoked session can never act again (its writes fail with reason 'revoked').
--
-- KEYS[1] lease hash of the agent     ({ns:shard}:lease:<agent>)
-- KEYS[2] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[3] lease index of the shard    ({ns:shard}:leases)
-- KEYS[4] audit stream of the shard   ({ns:shard}:events)
-- ARGV[1] agent id
-- ARGV[2] reason (recorded as the event's error_message)
--
-- Returns
--   {0, 1, session_id}   revoked
--   {0, 0, ''}           the agent had no live session
local lease_key, agent_key, index_key, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local agent, reason = ARGV[1], ARGV[2]

local live = redis.call('HGET', lease_key, 'sid')
if not live then
  reap_lapsed(lease_key, agent_key, index_key, stream, agent)
  return {0, 0, ''}
end
redis.call('DEL', lease_key)
redis.call('ZREM', index_key, agent)
redis.call('HSET', agent_key, 'st', 'r')
audit(stream, 'session_revoked', agent, live, sid_token(live), '', '', '', '', '1', reason, '')
return {0, 1, live}
