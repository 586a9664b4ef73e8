-- scan_leases: one page of a shard's live leases, index and lease fields in one call.
-- Reads only. The script scans the lease index itself (ZSCAN, so a lease present for
-- the whole listing is returned at least once even while deadlines move) and reads
-- each member's lease hash: no index round trip, no lease keys sent by the client.
--
-- KEYS[1]  lease index of the shard ({ns:shard}:leases); it routes the call
-- ARGV[1]  ZSCAN cursor ("0" to start)
-- ARGV[2]  ZSCAN COUNT hint (the page size)
-- ARGV[3]  lease key prefix of the shard ({ns:shard}:lease:)
-- ARGV[4..] the hash fields to read, in order (LEASE_FIELDS in coordinator/core.py)
--
-- The lease keys are not declared: each is the prefix plus a member of the index.
-- The prefix must carry the index key's own hash tag (checked), so every key read is
-- in the index's slot, on the node that runs the script (cluster-safe), as the
-- shard's keys always are.
--
-- Returns { next cursor, then for each live lease: agent id, its field values }.
-- A member whose lease lapsed since it was indexed (no session id) is left out.
local index_key, prefix = KEYS[1], ARGV[3]
local tag = string.match(index_key, '^{[^}]*}')
if not tag or string.sub(prefix, 1, #tag) ~= tag then
  return redis.error_reply('ERR scan_leases: the lease prefix is not in the index slot')
end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local page = redis.call('ZSCAN', index_key, ARGV[1], 'COUNT', ARGV[2])
local members = page[2]
local out, n = { page[1] }, 1
for i = 1, #members, 2 do
  local agent = members[i]
  local values = redis.call('HMGET', prefix .. agent, unpack(fields))
  if values[1] then
    n = n + 1
    out[n] = agent
    for j = 1, #fields do
      n = n + 1
      out[n] = values[j]
    end
  end
end
return out
