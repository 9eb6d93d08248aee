-- File a new session unless the key is taken. ARGV: now, expires at, then field/value pairs.
if redis.call('EXISTS', KEYS[1]) == 1 then return { 'collision' } end
local now, expires_at = tonumber(ARGV[1]), tonumber(ARGV[2])
if expires_at <= now then return { 'ok' } end
hset_all(KEYS[1], ARGV, 3)
redis.call('PEXPIRE', KEYS[1], int(expires_at - now))
count(expires_at, 1)
return { 'ok' }
