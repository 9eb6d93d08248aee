-- One user's index: a sorted set of session keys scored by absolute deadline. Pruned on every
-- write, and the whole set expires with its last session. KEYS[1]: the index.
-- ARGV: now, 'add' or 'rem', member, score (for 'add').
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if ARGV[2] == 'add' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  local ttl = tonumber(ARGV[4]) - now
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
  end
else
  redis.call('ZREM', KEYS[1], ARGV[3])
end
return redis.call('ZCARD', KEYS[1])
