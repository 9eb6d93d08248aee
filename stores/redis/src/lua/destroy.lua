-- Delete a session or an alias; an alias names its target so the caller deletes that too.
local m = redis.call('HMGET', KEYS[1], '__to', '__i', '__a')
redis.call('DEL', KEYS[1])
if m[1] then return { 'alias', m[1] } end
local idle, abs = tonumber(m[2]), tonumber(m[3])
if idle and abs then count(expiry(idle, abs), -1) end
return { 'ok' }
