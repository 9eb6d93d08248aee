-- Files a session in one user's index: a sorted set of session keys scored by absolute
-- deadline, pruned on every write, expiring with its last session. KEYS[1]: the index.
-- ARGV: now, member, score. The write scripts keep the index with `index_add` (apply_fn.lua).
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local ttl = tonumber(ARGV[3]) - now
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
end
return redis.call('ZCARD', KEYS[1])
