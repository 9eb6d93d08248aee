-- Conditional field-level write. ARGV: now, clear ('1'/'0'), user op ('' / 's' / 'c'), user,
-- new idle deadline (''), then counted lists: removes, set pairs, increment pairs.
-- This is the hot write path, so it is lean: no helper closures on the common path, one HMGET
-- reads everything the checks need, one HSET writes (each redis.call and each closure costs
-- server time on every call). Numbers are handed to Redis as Lua numbers, which it prints
-- as exact integers below 2^53. Every check runs before the first write: a script is not
-- rolled back when it fails halfway.
local now = tonumber(ARGV[1])
local nr = tonumber(ARGV[6])
local ns = tonumber(ARGV[7 + nr])
local first_inc = 9 + nr + 2 * ns
local ni = tonumber(ARGV[first_inc - 1])

local wanted = { '__to', '__i', '__a', '__u', '__g', '__v' }
for j = 0, ni - 1 do wanted[7 + j] = ARGV[first_inc + 2 * j] end
local m = redis.call('HMGET', KEYS[1], unpack(wanted))
if m[1] then return alias(m[1], m[5], now) end
if not m[2] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  return { 'corrupt', 'deadlines missing' }
end
local idle, abs = alive(m[2], m[3], now)
if not idle then
  if abs == 'corrupt' then return { 'corrupt', 'bad deadlines' } end
  return false
end

local clear = ARGV[2] == '1'
local removed = {}
for j = 7, 6 + nr do removed[ARGV[j]] = true end
local sets = {}
for j = 8 + nr, 7 + nr + 2 * ns, 2 do sets[ARGV[j]] = ARGV[j + 1] end

-- Counters stay exact: Lua numbers are doubles, so both operands are held to 15 digits.
local function integer(text)
  if text == '0' then return 0 end
  local digits = string.match(text, '^-?([1-9]%d*)$')
  if digits and #digits <= 15 then return tonumber(text) end
  return nil
end
local counters = {}
for j = 0, ni - 1 do
  local field = ARGV[first_inc + 2 * j]
  local base, by = 0, integer(ARGV[first_inc + 2 * j + 1])
  if not (clear or removed[field]) then
    local text = sets[field] or m[7 + j]
    if text then base = integer(text) end
  end
  if not base or not by then return { 'nan', field } end
  counters[#counters + 1] = field
  counters[#counters + 1] = base + by
end

local removes = {}
for j = 7, 6 + nr do removes[#removes + 1] = ARGV[j] end
if clear then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not META[f] then removes[#removes + 1] = f end
  end
end
if ARGV[3] == 'c' then removes[#removes + 1] = '__u' end
if #removes > 0 then redis.call('HDEL', KEYS[1], unpack(removes)) end

local writes = {}
for j = 8 + nr, 7 + nr + 2 * ns do writes[#writes + 1] = ARGV[j] end
for j = 1, #counters do writes[#writes + 1] = counters[j] end
if ARGV[3] == 's' then
  writes[#writes + 1] = '__u'
  writes[#writes + 1] = ARGV[4]
end
writes[#writes + 1] = '__v'
writes[#writes + 1] = (tonumber(m[6]) or 0) + 1
local deadline = nil
if ARGV[5] ~= '' then
  deadline = math.min(tonumber(ARGV[5]), abs)
  writes[#writes + 1] = '__i'
  writes[#writes + 1] = deadline
end
hset_all(KEYS[1], writes, 1)
if deadline then
  count(expiry(idle, abs), -1)
  if deadline > now then
    redis.call('PEXPIRE', KEYS[1], deadline - now)
    count(deadline, 1)
  else
    redis.call('DEL', KEYS[1])
  end
end
return { 'ok', m[4] or '', m[3], counters }
