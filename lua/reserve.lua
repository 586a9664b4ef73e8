-- reserve: claim resources of a scope for a live session, all or nothing, fenced and
-- audited. A claim conflicts with a live holder of the same resource, of a path above
-- it or beneath it, unless both are shared; and with any earlier queued claim it would
-- conflict with (arrival order: no waiter is overtaken). Lapsed holders found on the
-- way are expired (audited) first.
--
-- KEYS[1] records of the scope      ({ns:shard}:rsv:<scope>)
-- KEYS[2] held resources            ({ns:shard}:rsvheld:<scope>)
-- KEYS[3] holdings beneath paths    ({ns:shard}:rsvunder:<scope>)
-- KEYS[4] wait queue of the scope   ({ns:shard}:rsvwait:<scope>)
-- KEYS[5] reservation index         ({ns:shard}:rsvidx)
-- KEYS[6] reservation ids           ({ns:shard}:rsvids)
-- KEYS[7] audit stream of the shard ({ns:shard}:events)
-- KEYS[8] fencing counter of the scope ({ns:shard}:rfence:<scope>, written only by INCR)
-- KEYS[9], KEYS[10], KEYS[11], KEYS[12] lease hash, agent hash, fencing counter and
--         listed reservations (rsvof) of the agent, when ARGV[8] is '1' (same slot): a
--         grant is listed there, so ending the session releases it in the same script
-- KEYS[last] request record, when ARGV[9] is not ''
-- ARGV[1] agent id
-- ARGV[2] session id
-- ARGV[3] scope
-- ARGV[4] mode: 'x' exclusive, 's' shared
-- ARGV[5] ttl in ms ('' = the lease's ttl; only with ARGV[8] = '1')
-- ARGV[6] reason ('' = none)
-- ARGV[7] reservation id to mint
-- ARGV[8] '1' = check the session's lease here and list the grant (KEYS[9] to KEYS[12])
-- ARGV[9] request record ttl in ms ('' = no request id)
-- ARGV[10] fingerprint of the request's arguments
-- ARGV[11] wait: '' = do not queue; 'new:<stale ms>' = queue on conflict;
--          '<ticket>:<stale ms>' = queued claim polling; '<ticket>:0' = last poll
-- ARGV[12] '1' = audit a refusal
-- ARGV[13..] resource names
--
-- Returns
--   {0, id, token, now_ms, deadline_ms, ttl_ms}   granted (audited)
--   {2, reason}                                  the session is not live
--   {4}                                          request id reused with other arguments
--   {5, now_ms, holders_json, waiting_json}      refused (audited when ARGV[12] = '1')
--   {6, ticket, now_ms, holders_json, waiting_json}   queued, still waiting
local rec_key, held_key, under_key, wait_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local idx_key, ids_key, stream = KEYS[5], KEYS[6], KEYS[7]
local agent, sid, scope, mode, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local reason, id, in_slot, req_ttl, fingerprint = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local wait, audit_refusal = ARGV[11], ARGV[12]
local req_key = nil
if req_ttl ~= '' then req_key = KEYS[#KEYS] end

local now = server_ms()
if in_slot == '1' then
  local live = redis.call('HMGET', KEYS[9], 'sid', 'ttl')
  if live[1] ~= sid then return {2, dead_reason(KEYS[10], KEYS[11], sid, sid_token(sid), '0')} end
  if ttl == '' then ttl = live[2] end
end
if req_key then
  local done = redis.call('GET', req_key)
  if done then
    local d = cjson.decode(done)
    if d.f ~= fingerprint then return {4} end
    return {0, d.id, d.t, d.g, d.e, d.l}
  end
end

local names, paths = {}, {}
for i = 13, #ARGV do
  names[#names + 1] = ARGV[i]
  paths[#paths + 1] = rsv_path(ARGV[i])
end

-- Conflicting holders: reservation id -> the held paths that conflict.
local found, order = {}, {}
local function note(h, path)
  if mode ~= 'x' and string.sub(h, 1, 1) ~= 'x' then return end
  for other in string.gmatch(string.sub(h, 3), '%S+') do
    if not found[other] then
      found[other] = {}
      order[#order + 1] = other
    end
    table.insert(found[other], path)
  end
end
local everything = nil
for _, path in ipairs(paths) do
  local h = redis.call('HGET', held_key, path)
  if h then note(h, path) end
  for _, parent in ipairs(rsv_parents(path)) do
    h = redis.call('HGET', held_key, parent)
    if h then note(h, parent) end
  end
  local beneath = redis.call('HGET', under_key, ((mode == 'x') and 'a' or 'x') .. path)
  if beneath and tonumber(beneath) > 0 then
    everything = everything or redis.call('HGETALL', held_key)
    local prefix = path .. '/'
    for i = 1, #everything, 2 do
      if string.sub(everything[i], 1, #prefix) == prefix then note(everything[i + 1], everything[i]) end
    end
  end
end

local holders = {}
for _, other in ipairs(order) do
  local raw = redis.call('HGET', rec_key, other)
  if raw then
    local r = cjson.decode(raw)
    if r.e <= now then
      rsv_drop(rec_key, held_key, under_key, idx_key, ids_key, other, r)
      rsv_audit(stream, 'reservation_expired', scope, other, r, '1', 'reservation expired',
                {by = 'ttl'})
    else
      local shown = {}
      for _, name in ipairs(r.r) do
        local path = rsv_path(name)
        for _, hit in ipairs(found[other]) do
          if hit == path then
            shown[#shown + 1] = name
            break
          end
        end
      end
      holders[#holders + 1] = {id = other, a = r.a, s = r.s, m = r.m, r = shown, e = r.e}
    end
  end
end

-- The queue: earlier claims this one must not overtake. A queued claim whose client
-- stopped polling (its stale deadline passed) is dropped.
local ticket, stale = nil, 0
if wait ~= '' then
  local head, tail = string.match(wait, '^([^:]+):(%d+)$')
  if head ~= 'new' then ticket = tonumber(head) end
  stale = tonumber(tail)
end
local waiting = {}
if redis.call('EXISTS', wait_key) == 1 then
  local q = redis.call('HGETALL', wait_key)
  for i = 1, #q, 2 do
    if q[i] ~= '#' then
      local n, w = tonumber(q[i]), cjson.decode(q[i + 1])
      if w.d < now and n ~= ticket then
        redis.call('HDEL', wait_key, q[i])
      elseif (ticket == nil or n < ticket) and (mode == 'x' or w.m == 'x') then
        local hit = {}
        for _, mine in ipairs(paths) do
          for _, theirs in ipairs(w.k) do
            if rsv_overlap(mine, theirs) then hit[#hit + 1] = theirs end
          end
        end
        if #hit > 0 then waiting[#waiting + 1] = {q = n, a = w.a, s = w.s, m = w.m, r = hit} end
      end
    end
  end
end

if #holders > 0 or #waiting > 0 then
  local h_json = (#holders > 0) and cjson.encode(holders) or '[]'
  local w_json = (#waiting > 0) and cjson.encode(waiting) or '[]'
  if wait == '' or stale == 0 then
    if ticket then redis.call('HDEL', wait_key, tostring(ticket)) end
    if audit_refusal == '1' then
      local hs = {}
      for _, h in ipairs(holders) do
        hs[#hs + 1] = {agent_id = h.a, session_id = h.s, reservation_id = h.id,
                       mode = (h.m == 'x') and 'exclusive' or 'shared', resources = h.r}
      end
      local meta = {scope = scope, resources = names, mode = (mode == 'x') and 'exclusive' or 'shared',
                    holders = (#hs > 0) and hs or nil, waiting = #waiting}
      if reason ~= '' then meta.reason = reason end
      audit(stream, 'reservation_refused', agent, sid, sid_token(sid), '', '', '', '', '0',
            'resources held by another session', cjson.encode(meta))
    end
    return {5, now, h_json, w_json}
  end
  if not ticket then ticket = redis.call('HINCRBY', wait_key, '#', 1) end
  redis.call('HSET', wait_key, tostring(ticket),
             cjson.encode({a = agent, s = sid, m = mode, k = paths, d = now + stale}))
  return {6, ticket, now, h_json, w_json}
end

local token = redis.call('INCR', KEYS[8])
local ttl_ms = tonumber(ttl)
local deadline = now + ttl_ms
local r = {a = agent, s = sid, m = mode, r = names, t = token, g = now, e = deadline, l = ttl_ms,
           n = reason}
redis.call('HSET', rec_key, id, cjson.encode(r))
for _, path in ipairs(paths) do
  local h = redis.call('HGET', held_key, path)
  if h then
    redis.call('HSET', held_key, path, h .. ' ' .. id)
  else
    redis.call('HSET', held_key, path, mode .. ' ' .. id)
  end
  for _, parent in ipairs(rsv_parents(path)) do
    redis.call('HINCRBY', under_key, 'a' .. parent, 1)
    if mode == 'x' then redis.call('HINCRBY', under_key, 'x' .. parent, 1) end
  end
end
redis.call('ZADD', idx_key, int(deadline), id)
redis.call('HSET', ids_key, id, scope .. '\n' .. sid)
if in_slot == '1' then redis.call('HSET', KEYS[12], id, scope) end
if ticket then redis.call('HDEL', wait_key, tostring(ticket)) end
rsv_audit(stream, 'reservation_granted', scope, id, r, '1', '', nil)
if req_key then
  redis.call('SET', req_key, cjson.encode({f = fingerprint, id = id, t = token, g = now,
             e = deadline, l = ttl_ms}), 'PX', req_ttl)
end
return {0, id, token, now, deadline, ttl_ms}
