-- lib.lua: helpers prepended to every operation script by coordinator/scripts.py.
-- It declares no keys of its own: each helper takes key names its caller read from KEYS.
--
-- Agent hash fields: tok (fencing counter), sid (latest session), st (status of the
-- latest session: a=active e=ended r=revoked x=expired), p (project, '' = cleared),
-- v (version), ps (session of the last write), pe (stream id of its audit event, whose
-- millisecond part is the write's server time). The writer's fencing token is part of ps.
-- Lease hash fields: sid, start, hb, exp (deadline ms), ttl (ms), meta.

-- Server clock in milliseconds.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as exact decimal strings (Lua's tostring switches to exponents above 1e14).
local function int(x)
  return string.format('%d', x)
end

-- Fencing token of a session id ('<token>-<nonce>@<agent>').
local function sid_token(sid)
  return string.match(sid, '^(%d+)-') or ''
end

-- Append one audit event. The fields are always written in this order so a stream
-- node stores their names once (Redis compresses entries with the master's fields).
local function audit(stream, etype, agent, sid, tok, from_p, to_p, expected, actual, ok, err, meta)
  return redis.call('XADD', stream, '*',
    'event_type', etype, 'agent_id', agent, 'session_id', sid, 'fencing_token', tok,
    'from_project', from_p, 'to_project', to_p,
    'expected_version', expected, 'actual_version', actual,
    'success', ok, 'error_message', err, 'metadata', meta)
end

-- If the agent's lease ran out (the key is gone) but is still indexed, record the
-- expiry exactly once. Returns 1 when it reaped, else 0.
local function reap_lapsed(lease_key, agent_key, index_key, stream, agent)
  if redis.call('EXISTS', lease_key) == 1 then return 0 end
  if not redis.call('ZSCORE', index_key, agent) then return 0 end
  -- The token comes from the expired session's id: start_session has already minted
  -- the next token into 'tok' when it reaps here.
  -- (HMGET, not HGET: the worker's ACL user reaps but has no HGET, see deploy/README.md)
  local sid = redis.call('HMGET', agent_key, 'sid')[1]
  redis.call('ZREM', index_key, agent)
  redis.call('HSET', agent_key, 'st', 'x')
  audit(stream, 'session_expired', agent, sid or '', sid and sid_token(sid) or '', '', '', '',
        '', '1', 'lease expired', '')
  return 1
end

-- Why session `sid` (token `tok`) may not act for the agent. Only called when `sid`
-- is not the agent's live lease. `foreign` is '1' when the session belongs to
-- another agent.
local function dead_reason(agent_key, sid, tok, foreign)
  if foreign == '1' then return 'session_mismatch' end
  local a = redis.call('HMGET', agent_key, 'sid', 'tok', 'st')
  if a[1] == sid then
    if a[3] == 'r' then return 'revoked' end
    if a[3] == 'e' then return 'no_active_session' end
    return 'expired'
  end
  if a[2] and tonumber(tok) < tonumber(a[2]) then return 'superseded' end
  return 'no_active_session'
end
