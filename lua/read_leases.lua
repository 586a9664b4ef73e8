-- read_leases: the listing fields of a page of leases of one shard, in one call.
-- Reads only. One call per page instead of one HMGET per lease: the per-command cost
-- of a client pipeline was most of what listing 100,000 leases took. Each lease comes
-- back as one string, so the client parses one reply element per lease, not six.
--
-- KEYS[1] .. KEYS[n]  lease hashes of n agents, all of one shard ({ns:shard}:lease:<agent>)
-- ARGV                none
--
-- Returns an array of n elements, one per key in turn: the lease's fields sid, start,
-- hb, exp, ttl and meta joined by "\n" (meta last, '' when the lease has none: only
-- meta could hold a newline, and the client splits at the first five), or nil where
-- the lease is gone (it lapsed since the index was read).
local lease_keys = KEYS
local out = {}
for i = 1, #lease_keys do
  local v = redis.call('HMGET', lease_keys[i], 'sid', 'start', 'hb', 'exp', 'ttl', 'meta')
  if v[1] then
    out[i] = v[1] .. '\n' .. v[2] .. '\n' .. v[3] .. '\n' .. v[4] .. '\n' .. v[5] .. '\n' .. (v[6] or '')
  else
    out[i] = false
  end
end
return out
