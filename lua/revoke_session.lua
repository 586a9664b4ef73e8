-- revoke_session: an operator ends the agent's live session, with a reason (audited).
-- The revoked session can never act again (its writes fail with reason 'revoked').
--
-- KEYS[1] lease hash of the agent     ({ns:shard}:lease:<agent>)
-- KEYS[2] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[3] lease index of the shard    ({ns:shard}:leases)
-- KEYS[4] audit stream of the shard   ({ns:shard}:events)
-- ARGV[1] agent id
-- KEYS[5] the agent's reservations in its shard ({ns:shard}:rsvof:<agent>)
-- KEYS[6] reservation index, KEYS[7] reservation ids of the shard (rsvidx, rsvids)
-- KEYS[8..] records, held and under keys of each scope in ARGV[3..]
-- ARGV[1] agent id
-- ARGV[2] reason (recorded as the event's error_message)
-- ARGV[3..] scopes of the shard the agent may hold reservations in (see rsv_listed)
--
-- Revoking (or finding the lease lapsed) releases the reservations listed in KEYS[5]
-- in this same script.
--
-- Returns
--   {0, 1, session_id}   revoked
--   {0, 0, ''}           the agent had no live session
--   {9, scope...}        nothing done: the agent holds reservations in these scopes too
local lease_key, agent_key, index_key, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local of_key, idx_key, ids_key = KEYS[5], KEYS[6], KEYS[7]
local agent, reason = ARGV[1], ARGV[2]

local given, of, missing = rsv_listed(of_key, 8, 3)
if #missing > 0 then return {9, unpack(missing)} end
local live = redis.call('HGET', lease_key, 'sid')
if not live then
  reap_lapsed(lease_key, agent_key, index_key, stream, agent)
  rsv_release_dead(of_key, of, given, agent_key, idx_key, ids_key, stream)
  return {0, 0, ''}
end
redis.call('DEL', lease_key)
redis.call('ZREM', index_key, agent)
redis.call('HSET', agent_key, 'st', 'r')
audit(stream, 'session_revoked', agent, live, sid_token(live), '', '', '', '', '1', reason, '')
rsv_release_listed(of_key, of, given, idx_key, ids_key, stream, live, 'reservation_released',
                   'session revoked')
return {0, 1, live}
