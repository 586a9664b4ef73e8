-- dead_letter: move one audit entry the worker cannot persist to the shard's
-- dead-letter stream and acknowledge it, atomically: a crash never leaves it both
-- acknowledged and missing, nor dead-lettered twice (only a still-pending entry moves).
--
-- KEYS[1] audit stream of the shard        ({ns:shard}:events)
-- KEYS[2] dead-letter stream of the shard  ({ns:shard}:dead)
-- ARGV[1] consumer group, ARGV[2] entry id, ARGV[3] consumer, ARGV[4] reason,
-- ARGV[5..] the entry's field/value pairs (empty when the entry no longer exists)
--
-- Returns 1 when the entry was moved, 0 when it was not pending (already handled).
local stream, dead = KEYS[1], KEYS[2]
if redis.call('XACK', stream, ARGV[1], ARGV[2]) == 0 then
  return 0
end
local fields = {'source_id', ARGV[2], 'consumer', ARGV[3], 'reason', ARGV[4]}
for i = 5, #ARGV, 2 do
  fields[#fields + 1] = 'field:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', dead, '*', unpack(fields))
return 1
