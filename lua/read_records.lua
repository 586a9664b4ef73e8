-- read_records: the project records of several agents of one shard, in one call.
-- Reads only. One call per shard instead of one HMGET per agent (the per-command cost
-- of a client pipeline), each record as one string, as read_leases returns leases.
--
-- KEYS[1] .. KEYS[n]  agent hashes of n agents, all of one shard ({ns:shard}:agent:<agent>)
-- ARGV                none
--
-- Returns an array of n elements, one per key in turn: the record's fields p, v, ps
-- and pe (RECORD_FIELDS in coordinator/core.py) joined by "\n" ('' for a missing
-- field; none of them can hold a newline), or nil where the agent has no record.
local agent_keys = KEYS
local out = {}
for i = 1, #agent_keys do
  local v = redis.call('HMGET', agent_keys[i], 'p', 'v', 'ps', 'pe')
  if v[2] then
    out[i] = (v[1] or '') .. '\n' .. v[2] .. '\n' .. (v[3] or '') .. '\n' .. (v[4] or '')
  else
    out[i] = false
  end
end
return out
