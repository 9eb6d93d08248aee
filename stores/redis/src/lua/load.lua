-- Load, and slide the idle deadline when due. ARGV: now, refresh-if-before ('' = never), new idle deadline.
local now = tonumber(ARGV[1])
local flat, m = read_live(now)
if not flat then return m end
if ARGV[2] ~= '' and m.idle < tonumber(ARGV[2]) then
  local deadline = tonumber(ARGV[3])
  if deadline > m.abs then deadline = m.abs end
  if deadline > now then
    count(expiry(m.idle, m.abs), -1)
    count(deadline, 1)
    slide(m, deadline)
    m.version = m.version + 1
    redis.call('HSET', KEYS[1], '__m', packed(m))
    redis.call('PEXPIRE', KEYS[1], int(deadline - now))
    return { 'refreshed', redis.call('HGETALL', KEYS[1]) }
  end
end
return { 'ok', flat }
