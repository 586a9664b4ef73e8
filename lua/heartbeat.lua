-- heartbeat: extend a live session's lease by its TTL (native expiry moves with it).
--
-- KEYS[1] lease hash of the agent     ({ns:shard}:lease:<agent>)
-- KEYS[2] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[3] lease index of the shard    ({ns:shard}:leases)
-- KEYS[4] audit stream of the shard   ({ns:shard}:events)
-- KEYS[5] fencing counter of the agent ({ns:shard}:fence:<agent>)
-- ARGV[1] agent id (parsed from the session id by the client)
-- ARGV[2] session id
-- ARGV[3] fencing token of the session
-- ARGV[4] new TTL in milliseconds ('' = keep the session's TTL)
--
-- Returns
--   {0, started_ms, now_ms, deadline_ms, ttl_ms, metadata}   extended
--   {2, reason}   not alive: no_active_session | expired | revoked | superseded
--                 (a lapsed lease found here is reaped and audited as session_expired)
local lease_key, agent_key, index_key, stream, fence_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local agent, sid, tok, new_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local live = redis.call('HMGET', lease_key, 'sid', 'start', 'ttl', 'meta')
if live[1] == sid and fenced(fence_key, tok) then return {2, 'superseded'} end
if live[1] == sid then
  local ttl = tonumber(new_ttl) or tonumber(live[3])
  local now = server_ms()
  local deadline = now + ttl
  -- PEXPIREAT first: a caller whose ACL lacks it (worker, admin) is refused before
  -- anything changed.
  redis.call('PEXPIREAT', lease_key, int(deadline))
  redis.call('HSET', lease_key, 'hb', int(now), 'exp', int(deadline), 'ttl', int(ttl))
  redis.call('ZADD', index_key, int(deadline), agent)
  return {0, tonumber(live[2]), now, deadline, ttl, live[4]}
end
if not live[1] then
  reap_lapsed(lease_key, agent_key, index_key, stream, agent)
end
return {2, dead_reason(agent_key, fence_key, sid, tok, '0')}
