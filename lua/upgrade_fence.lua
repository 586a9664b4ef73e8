-- upgrade_fence: key schema 1 -> 2 for one agent: move the fencing counter from the
-- agent hash's 'tok' field to its own key, never lowering it (run by
-- `coordinator upgrade-keys`, not by the clients; re-running it changes nothing).
--
-- KEYS[1] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[2] fencing counter of the agent ({ns:shard}:fence:<agent>)
--
-- Returns the agent's fencing counter after the move (0 = the agent never had a session).
local agent_key, fence_key = KEYS[1], KEYS[2]
local legacy = tonumber(redis.call('HGET', agent_key, 'tok') or '0')
local fence = tonumber(redis.call('GET', fence_key) or '0')
if legacy > fence then
  redis.call('SET', fence_key, int(legacy))
  fence = legacy
end
redis.call('HDEL', agent_key, 'tok')
return fence
