-- First half of a cycle: take a live session's data and leave an alias to the new key for the
-- grace window. ARGV: now, new key (as stored in the alias), grace until.
local now = tonumber(ARGV[1])
local flat, m = read_live(now)
if not flat then return m end
redis.call('DEL', KEYS[1])
count(expiry(m.idle, m.abs), -1)
local grace_until = tonumber(ARGV[3])
if grace_until > now then
  redis.call('HSET', KEYS[1], '__to', ARGV[2], '__g', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], int(grace_until - now))
end
return { 'ok', flat }
