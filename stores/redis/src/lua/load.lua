-- Load, and slide the idle deadline when due. ARGV: now, refresh-if-before ('' = never), new idle deadline.
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
if ARGV[2] ~= '' and idle < tonumber(ARGV[2]) then
  local deadline = tonumber(ARGV[3])
  if deadline > abs then deadline = abs end
  if deadline > now then
    redis.call('HSET', KEYS[1], '__i', int(deadline))
    redis.call('HINCRBY', KEYS[1], '__v', 1)
    redis.call('PEXPIRE', KEYS[1], int(deadline - now))
    count(expiry(idle, abs), -1)
    count(deadline, 1)
    return { 'refreshed', redis.call('HGETALL', KEYS[1]) }
  end
end
return { 'ok', flat }
