-- Delete a session and the alias a renewal left to it; given an alias, delete only the alias
-- (an old ID may not end the session it once named). KEYS: the session, its live-count
-- bucket, its tombstone. ARGV: key prefix, then optionally why it ends, for how many
-- milliseconds to keep that, and the caller's now (a signed-in session only: an anonymous
-- flood keeps nothing). Reply: { 'ok', user? } for a session, { 'expired' } for a signed-in
-- one already past a deadline, { 'alias', target } for an alias, false for nothing.
local got = redis.call('HMGET', KEYS[1], '__to', '__m', '__from')
if not got[1] and not got[2] then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('DEL', KEYS[1])
if got[1] then return { 'alias', got[1] } end
announce_end(ARGV[1], string.sub(KEYS[1], #ARGV[1] + 1))
if got[3] then
  local from = ARGV[1] .. got[3]
  if redis.call('HGET', from, '__to') == string.sub(KEYS[1], #ARGV[1] + 1) then
    redis.call('DEL', from)
    announce_end(ARGV[1], got[3])
  end
end
local m = meta(got[2])
if m then count(expiry(m.idle, m.abs), -1) end
if m and m.user then
  if ARGV[2] then
    -- Past a deadline by the caller's clock (its TTL not yet run out): ending it is no
    -- logout; it keeps which deadline passed.
    local now = tonumber(ARGV[4])
    if now and (m.idle <= now or m.abs <= now) then
      local why = 'expired_idle'
      if m.abs <= m.idle then why = 'expired_absolute' end
      redis.call('SET', KEYS[3], why, 'PX', ARGV[3])
      return { 'expired' }
    end
    redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
  end
  return { 'ok', m.user }
end
return { 'ok' }
