-- reap_expired: turn leases of one shard whose TTL ran out into session_expired events.
-- Candidates come from the shard's lease index (read by the client); a candidate
-- whose lease still exists (a heartbeat came in meanwhile) is left alone, and a
-- candidate already reaped by another process is skipped, so each expiry is
-- audited exactly once across all processes.
--
-- KEYS[1] lease index of the shard    ({ns:shard}:leases)
-- KEYS[2] audit stream of the shard   ({ns:shard}:events)
-- KEYS[1+2i] lease hash of candidate i, KEYS[2+2i] its agent hash (i = 1..#ARGV)
-- ARGV[i] agent id of candidate i
--
-- Returns the number of sessions reaped.
local index_key, stream = KEYS[1], KEYS[2]
local reaped = 0
for i = 1, #ARGV do
  reaped = reaped + reap_lapsed(KEYS[1 + 2 * i], KEYS[2 + 2 * i], index_key, stream, ARGV[i])
end
return reaped
