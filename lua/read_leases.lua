-- read_leases: the listing fields of a page of leases of one shard, in one call.
-- Reads only. One call per page instead of one HMGET per lease: the per-command cost
-- of a client pipeline was most of what listing 100,000 leases took.
--
-- KEYS[1] .. KEYS[n]  lease hashes of n agents, all of one shard ({ns:shard}:lease:<agent>)
-- ARGV[1] .. ARGV[m]  the hash fields to read, in order (LEASE_FIELDS in coordinator/core.py)
--
-- Returns one flat array: for each key in turn, its m field values (nil where a
-- lease or a field is missing: the lease lapsed since the index was read).
local lease_keys, fields = KEYS, ARGV
local out, n = {}, 0
for i = 1, #lease_keys do
  local values = redis.call('HMGET', lease_keys[i], unpack(fields))
  for j = 1, #fields do
    n = n + 1
    out[n] = values[j]
  end
end
return out
