-- Delete a session or an alias; an alias names its target so the caller deletes that too.
-- A session that a renewal's alias still reaches takes the alias with it (a revoked session
-- leaves no old ID behind). ARGV: key prefix.
local got = redis.call('HMGET', KEYS[1], '__to', '__m', '__from')
redis.call('DEL', KEYS[1])
if got[1] then return { 'alias', got[1] } end
if got[3] then
  local from = ARGV[1] .. got[3]
  if redis.call('HGET', from, '__to') == string.sub(KEYS[1], #ARGV[1] + 1) then
    redis.call('DEL', from)
  end
end
local m = meta(got[2])
if m then count(expiry(m.idle, m.abs), -1) end
return { 'ok' }
