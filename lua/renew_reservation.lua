-- renew_reservation: move a live reservation's deadline to now + ttl (not audited,
-- like a heartbeat).
--
-- KEYS[1] records of the scope      ({ns:shard}:rsv:<scope>)
-- KEYS[2] reservation index         ({ns:shard}:rsvidx)
-- KEYS[3], KEYS[4], KEYS[5] lease hash, agent hash and fencing counter of the agent,
--         when ARGV[4] is '1' (same slot)
-- ARGV[1] reservation id
-- ARGV[2] session id (must hold it)
-- ARGV[3] ttl in ms ('' = the reservation's own ttl)
-- ARGV[4] '1' = check the session's lease here (KEYS[3] to KEYS[5])
--
-- Returns
--   {0, token, granted_ms, deadline_ms, ttl_ms, record_json}   renewed
--   {2, reason}                                   the session is not live
--   {8}                                           not held by the session (or lapsed)
local rec_key, idx_key = KEYS[1], KEYS[2]
local id, sid, ttl, in_slot = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if in_slot == '1' and redis.call('HGET', KEYS[3], 'sid') ~= sid then
  return {2, dead_reason(KEYS[4], KEYS[5], sid, sid_token(sid), '0')}
end
local raw = redis.call('HGET', rec_key, id)
if not raw then return {8} end
local r = cjson.decode(raw)
local now = server_ms()
if r.s ~= sid or r.e <= now then return {8} end
local ttl_ms = (ttl == '') and r.l or tonumber(ttl)
r.e = now + ttl_ms
r.l = ttl_ms
raw = cjson.encode(r)
redis.call('HSET', rec_key, id, raw)
redis.call('ZADD', idx_key, int(r.e), id)
return {0, r.t, r.g, r.e, ttl_ms, raw}
