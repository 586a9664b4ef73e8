-- import_project: import one project record from the original (scribe_mcp) with its
-- audit event ('project_imported'). The stored version never goes down: a record is
-- imported only when it is newer (a higher version) than what the agent has. A bind
-- (the JSON state's current project) writes the next version, and only when the
-- agent has no project.
--
-- KEYS[1] agent hash                  ({ns:shard}:agent:<agent>)
-- KEYS[2] audit stream of the shard   ({ns:shard}:events)
-- ARGV[1] agent id
-- ARGV[2] project name ('' = cleared)
-- ARGV[3] version to store ('' = bind: the stored version + 1)
-- ARGV[4] session id of the imported write ('' = none)
-- ARGV[5] the record's event id: '<legacy updated_at ms>-0', so that updated_at keeps the
--         original's time ('' = the id of this import's audit event)
-- ARGV[6] metadata of the audit event as JSON (source and the original row)
--
-- Returns
--   {0, version, event_id}   imported (event_id: this import's audit event)
--   {1, project, version}    left alone: the stored record is as new or newer, or
--                            (bind) the agent already has a project; version 0 = none
local agent_key, stream = KEYS[1], KEYS[2]
local agent, project, version, sid, record_id, meta = ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  ARGV[5], ARGV[6]

local rec = redis.call('HMGET', agent_key, 'p', 'v')
local current_p, current_v = rec[1] or '', tonumber(rec[2] or '0')
local new_v
if version == '' then
  if current_p ~= '' then return {1, current_p, current_v} end
  new_v = current_v + 1
else
  new_v = tonumber(version)
  if new_v <= current_v then return {1, current_p, current_v} end
end

local id = audit(stream, 'project_imported', agent, sid, '', current_p, project, rec[2] or '',
                 int(new_v), '1', '', meta)
if record_id == '' then record_id = id end
redis.call('HSET', agent_key, 'p', project, 'v', int(new_v), 'ps', sid, 'pe', record_id)
return {0, new_v, id}
