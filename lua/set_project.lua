-- set_project: compare-and-set of the agent's project record by its live session.
-- Lease check, version check, write and audit event happen here atomically; a
-- rejected attempt (dead or foreign session, version conflict) is audited too.
--
-- KEYS[1] lease hash of the agent     ({ns:shard}:lease:<agent>)
-- KEYS[2] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[3] lease index of the shard    ({ns:shard}:leases)
-- KEYS[4] audit stream of the shard   ({ns:shard}:events)
-- KEYS[5] fencing counter of the agent ({ns:shard}:fence:<agent>)
-- KEYS[6] optional request record     ({ns:shard}:req:<request id>:<agent>)
-- ARGV[1] agent id
-- ARGV[2] session id
-- ARGV[3] fencing token of the session
-- ARGV[4] project name ('' = clear the project)
-- ARGV[5] '1' when the session id belongs to another agent
-- ARGV[6] expected version ('' = unconditional; '0' = only if the agent has no record)
-- ARGV[7] request record TTL in milliseconds (with KEYS[6])
--
-- Returns (a repeated request id returns the first reply, with strings for numbers)
--   {0, version, event_id}                                      written
--   {1, project, version, session, event_id}                    conflict: the current
--        record ('' project = cleared or none; version 0 = no record)
--   {2, reason}        lease check failed: no_active_session | session_mismatch |
--                      expired | revoked | superseded
--   {4}                the request id was used before with other arguments
local lease_key, agent_key, index_key, stream, fence_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local req_key = KEYS[6]
local agent, sid, tok, project, foreign, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local fingerprint
if req_key then
  fingerprint = sid .. '\n' .. project .. '\n' .. expected
  local previous = redis.call('GET', req_key)
  if previous then
    local record = cjson.decode(previous)
    if record[1] ~= fingerprint then return {4} end
    return record[2]
  end
end

local reply, reason
local live = redis.call('HGET', lease_key, 'sid')
if live ~= sid or foreign == '1' then
  if not live then
    reap_lapsed(lease_key, agent_key, index_key, stream, agent)
  end
  reason = dead_reason(agent_key, fence_key, sid, tok, foreign)
elseif fenced(fence_key, tok) then
  reason = 'superseded'
end
if reason then
  local rec = redis.call('HMGET', agent_key, 'p', 'v')
  audit(stream, 'write_rejected', agent, sid, tok, rec[1] or '', project, expected,
        rec[2] or '0', '0', reason, '')
  reply = {2, reason}
else
  local rec = redis.call('HMGET', agent_key, 'p', 'v', 'ps', 'pe')
  local from_p, current = rec[1] or '', rec[2] or '0'
  if expected ~= '' and expected ~= current then
    audit(stream, 'conflict_detected', agent, sid, tok, from_p, project, expected, current, '0',
          'expected version ' .. expected .. ', current ' .. current, '')
    reply = {1, from_p, current, rec[3] or '', rec[4] or ''}
  else
    local etype = 'project_set'
    if project == '' then
      etype = 'project_cleared'
    elseif from_p ~= '' and from_p ~= project then
      etype = 'project_switched'
    end
    local version = int(redis.call('HINCRBY', agent_key, 'v', 1))
    -- The record keeps its audit event's id: it links the two, and its millisecond
    -- part is the write's server time (parsing it here would cost more than in Python).
    local id = audit(stream, etype, agent, sid, tok, from_p, project, expected, version, '1', '', '')
    redis.call('HSET', agent_key, 'p', project, 'ps', sid, 'pe', id)
    reply = {0, tonumber(version), id}
  end
end

if req_key then
  local stored = {}
  for i, value in ipairs(reply) do
    stored[i] = type(value) == 'number' and int(value) or value
  end
  redis.call('SET', req_key, cjson.encode({fingerprint, stored}), 'PX', ARGV[7])
end
return reply
