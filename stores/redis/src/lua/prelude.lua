-- Shared by every session script. KEYS[1] is the session hash; KEYS[2] the live-count hash,
-- which counts sessions per minute of expiry so `stats` can count without scanning keys.
local META = { __c = true, __i = true, __a = true, __u = true, __v = true, __to = true, __g = true }
local BUCKET_MS = 60000

-- Integers travel as decimal text: Lua's own number formatting may use exponents.
local function int(n)
  return string.format('%d', n)
end

local function expiry(idle, abs)
  if idle < abs then return idle end
  return abs
end

local function count(expires_at, by)
  local field = int(math.floor(expires_at / BUCKET_MS))
  if redis.call('HINCRBY', KEYS[2], field, by) <= 0 then
    redis.call('HDEL', KEYS[2], field)
  end
end

-- HSET in slices: Lua's stack caps how many values one call can unpack.
local function hset_all(key, list, from)
  if #list - from < 400 then
    if #list >= from then redis.call('HSET', key, unpack(list, from)) end
    return
  end
  local i = from
  while i <= #list do
    local last = math.min(i + 199, #list)
    redis.call('HSET', key, unpack(list, i, last))
    i = last + 1
  end
end

-- Metadata of a flat HGETALL reply.
local function meta_of(flat)
  local m = {}
  for i = 1, #flat, 2 do
    if META[flat[i]] then m[flat[i]] = flat[i + 1] end
  end
  return m
end

-- The target of a cycle's alias while its grace window (`__g`) lasts; a spent alias is deleted.
local function alias(to, grace_until, now)
  if now < (tonumber(grace_until) or 0) then return { 'alias', to } end
  redis.call('DEL', KEYS[1])
  return false
end

-- Deadlines of a live session, or nil after deleting a dead one (judged by the caller's clock).
local function alive(idle_text, abs_text, now)
  local idle, abs = tonumber(idle_text), tonumber(abs_text)
  if not idle or not abs then return nil, 'corrupt' end
  if now >= idle or now >= abs then
    redis.call('DEL', KEYS[1])
    count(expiry(idle, abs), -1)
    return nil, 'gone'
  end
  return idle, abs
end

-- HGETALL of a live session with its deadlines; otherwise nil and the reply to give instead
-- (false when there is no live session, the alias's target, or a corruption report).
local function read_live(now)
  local flat = redis.call('HGETALL', KEYS[1])
  if #flat == 0 then return nil, false end
  local m = meta_of(flat)
  if m.__to then return nil, alias(m.__to, m.__g, now) end
  local idle, abs = alive(m.__i, m.__a, now)
  if not idle then
    if abs == 'corrupt' then return nil, { 'corrupt', 'deadlines missing' } end
    return nil, false
  end
  return flat, idle, abs
end

