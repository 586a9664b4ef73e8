-- release_reservations: release reservations of one scope (audited, each once).
--
-- KEYS[1] records of the scope      ({ns:shard}:rsv:<scope>)
-- KEYS[2] held resources            ({ns:shard}:rsvheld:<scope>)
-- KEYS[3] holdings beneath paths    ({ns:shard}:rsvunder:<scope>)
-- KEYS[4] reservation index         ({ns:shard}:rsvidx)
-- KEYS[5] reservation ids           ({ns:shard}:rsvids)
-- KEYS[6] audit stream of the shard ({ns:shard}:events)
-- KEYS[7..6+m] listed reservations (rsvof) of the agents in ARGV[8..7+m], in this shard
-- ARGV[1] which: 'session' = only reservations of session ARGV[2]; 'any' (operator);
--         'lapsed' = only those past their deadline (server clock)
-- ARGV[2] session id (for 'session')
-- ARGV[3] event type: 'reservation_released' or 'reservation_expired'
-- ARGV[4] error_message of the events ('' = none)
-- ARGV[5] who released: 'holder', 'operator', 'session' or 'ttl' (metadata 'by')
-- ARGV[6] scope
-- ARGV[7] m, the number of agents whose listings (rsvof) are given
-- ARGV[8..7+m] those agents: a released reservation of one leaves its listing
-- ARGV[8+m..] reservation ids
--
-- Returns how many reservations this call released (one already gone counts 0).
local rec_key, held_key, under_key = KEYS[1], KEYS[2], KEYS[3]
local idx_key, ids_key, stream = KEYS[4], KEYS[5], KEYS[6]
local which, sid, etype, message, by, scope = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local now = nil
if which == 'lapsed' then now = server_ms() end
local m = tonumber(ARGV[7])
local listed = {}
for j = 1, m do listed[ARGV[7 + j]] = KEYS[6 + j] end
local released = 0
for i = 8 + m, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HMGET', rec_key, id)[1]
  if raw then
    local r = cjson.decode(raw)
    if (which == 'any') or (which == 'session' and r.s == sid) or (which == 'lapsed' and r.e <= now) then
      rsv_drop(rec_key, held_key, under_key, idx_key, ids_key, id, r)
      if listed[r.a] then redis.call('HDEL', listed[r.a], id) end
      rsv_audit(stream, etype, scope, id, r, '1', message, {by = by})
      released = released + 1
    end
  end
end
return released
