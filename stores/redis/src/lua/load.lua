-- Load, and slide the idle deadline when due. ARGV: now, refresh-if-before ('' = never), new idle deadline.
local now = tonumber(ARGV[1])
local flat, idle, abs = read_live(now)
if not flat then return idle end
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
