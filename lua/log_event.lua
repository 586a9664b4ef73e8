-- log_event: append an application-level audit event (AgentContextManager.log_agent_event
-- of the compatibility adapter). It changes no state. The event is typed 'app_event' and
-- carries the application's own type in its metadata ('logged_type'), so an application
-- can never write an event that passes for a change the coordinator made.
--
-- KEYS[1] audit stream of the agent's shard   ({ns:shard}:events)
-- ARGV[1] agent id
-- ARGV[2] session id ('' = none)
-- ARGV[3] fencing token of that session ('' = none)
-- ARGV[4] from project ('' = none)
-- ARGV[5] to project ('' = none)
-- ARGV[6] expected version ('' = none)
-- ARGV[7] actual version ('' = none)
-- ARGV[8] '1' = the application reports success, '0' = failure
-- ARGV[9] error message ('' = none)
-- ARGV[10] metadata as JSON: {"logged_type": ..., "metadata": ...}
--
-- Returns
--   {0, event_id}   appended
local stream = KEYS[1]

local id = audit(stream, 'app_event', ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
                 ARGV[7], ARGV[8], ARGV[9], ARGV[10])
return {0, id}
