-- init_namespace: record the namespace's shard count and schema version at first use
-- and return what is recorded, so a client configured differently can refuse.
--
-- KEYS[1] namespace metadata hash  (<ns>:meta)
-- ARGV[1] shard count this client is configured with
-- ARGV[2] schema version this client speaks
--
-- Returns {recorded shard count, recorded schema version} (strings).
local meta_key = KEYS[1]
redis.call('HSETNX', meta_key, 'shards', ARGV[1])
redis.call('HSETNX', meta_key, 'schema', ARGV[2])
return redis.call('HMGET', meta_key, 'shards', 'schema')
