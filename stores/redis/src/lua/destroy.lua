-- Delete a session or an alias; an alias names its target so the caller deletes that too.
local got = redis.call('HMGET', KEYS[1], '__to', '__m')
redis.call('DEL', KEYS[1])
if got[1] then return { 'alias', got[1] } end
local m = meta(got[2])
if m then count(expiry(m.idle, m.abs), -1) end
return { 'ok' }
