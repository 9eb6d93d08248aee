-- First half of a cycle: take a live session's data and leave an alias to the new key for the
-- grace window. ARGV: now, new key (as stored in the alias), grace until.
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return false end
local m = meta_of(flat)
local now = tonumber(ARGV[1])
if m.__to then return alias(m.__to, m.__g, now) end
local idle, abs = alive(m.__i, m.__a, now)
if not idle then
  if abs == 'corrupt' then return { 'corrupt', 'deadlines missing' } end
  return false
end
redis.call('DEL', KEYS[1])
count(expiry(idle, abs), -1)
local grace_until = tonumber(ARGV[3])
if grace_until > now then
  redis.call('HSET', KEYS[1], '__to', ARGV[2], '__g', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], int(grace_until - now))
end
return { 'ok', flat }
