-- File a new session unless the key is taken. ARGV: now, expires at, replace-alias-to ('' = never),
-- then field/value pairs. The third argument lets a failed cycle put a session back under its
-- old key, which by then is an alias to the new one.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[3] == '' or redis.call('HGET', KEYS[1], '__to') ~= ARGV[3] then
    return { 'collision' }
  end
  redis.call('DEL', KEYS[1])
end
local now, expires_at = tonumber(ARGV[1]), tonumber(ARGV[2])
if expires_at <= now then return { 'ok' } end
hset_all(KEYS[1], ARGV, 4)
redis.call('PEXPIRE', KEYS[1], int(expires_at - now))
count(expires_at, 1)
return { 'ok' }
