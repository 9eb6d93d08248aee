-- File a new session unless the key is taken. ARGV: now, expires at, then field/value pairs.
if redis.call('EXISTS', KEYS[1]) == 1 then return { 'collision' } end
local now, expires_at = tonumber(ARGV[1]), tonumber(ARGV[2])
if expires_at <= now then return { 'ok' } end
hset_all(KEYS[1], ARGV, 3)
redis.call('PEXPIRE', KEYS[1], int(expires_at - now))
count(expires_at, 1)
for i = 3, #ARGV - 1, 2 do
  if ARGV[i] == '__m' then
    local m = meta(ARGV[i + 1])
    if m and m.user then count_login() end
  end
end
return { 'ok' }
