-- reap_expired: turn leases of one shard whose TTL ran out into session_expired events.
-- Candidates come from the shard's lease index (read by the client); a candidate
-- whose lease still exists (a heartbeat came in meanwhile) is left alone, and a
-- candidate already reaped by another process is skipped, so each expiry is
-- audited exactly once across all processes. A reaped session's reservations listed
-- for its agent (rsvof) are released, as reservation_expired, in the same script.
--
-- KEYS[1] lease index of the shard    ({ns:shard}:leases)
-- KEYS[2] audit stream of the shard   ({ns:shard}:events)
-- KEYS[3] reservation index, KEYS[4] reservation ids of the shard (rsvidx, rsvids)
-- KEYS[2+3i], KEYS[3+3i], KEYS[4+3i] lease hash, agent hash and listed reservations
--         (rsvof) of candidate i (i = 1..n)
-- KEYS[5+3n..] records, held and under keys of each scope in ARGV[n+2..]
-- ARGV[1] n, the number of candidates
-- ARGV[1+i] agent id of candidate i
-- ARGV[n+2..] scopes of the shard the candidates may hold reservations in
--
-- Returns {reaped, scope...}: how many sessions this call reaped, and the scopes a
-- candidate holds reservations in that were not given (that candidate is left for a
-- call that gives them).
local index_key, stream, idx_key, ids_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = tonumber(ARGV[1])
local reaped, wanted, seen = 0, {}, {}
for i = 1, n do
  local lease_key, agent_key, of_key = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local given, of, missing = rsv_listed(of_key, 5 + 3 * n, n + 2)
  if #missing > 0 then
    for _, scope in ipairs(missing) do
      if not seen[scope] then
        seen[scope] = true
        wanted[#wanted + 1] = scope
      end
    end
  elseif reap_lapsed(lease_key, agent_key, index_key, stream, ARGV[1 + i]) == 1 then
    reaped = reaped + 1
    rsv_release_dead(of_key, of, given, agent_key, idx_key, ids_key, stream)
  end
end
return {reaped, unpack(wanted)}
