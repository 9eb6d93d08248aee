-- Conditional field-level write. ARGV: now, clear ('1'/'0'), user op ('' / 's' / 'c'), user,
-- new idle deadline (''), then counted lists: removes, set pairs, increment pairs.
-- Every check runs before the first write: a script is not rolled back when it fails halfway.
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', KEYS[1], '__to', '__i', '__a', '__u', '__g')
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
local i = 6
local removes = {}
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do removes[#removes + 1] = ARGV[i]; i = i + 1 end
local removed = {}
for _, f in ipairs(removes) do removed[f] = true end
local sets, set_list = {}, {}
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  sets[ARGV[i]] = ARGV[i + 1]
  set_list[#set_list + 1] = ARGV[i]
  set_list[#set_list + 1] = ARGV[i + 1]
  i = i + 2
end
-- Counters stay exact: Lua numbers are doubles, so both operands are held to 15 digits.
local function integer(text)
  local digits = string.match(text, '^-?([1-9]%d*)$')
  if text == '0' or (digits and #digits <= 15) then
    return tonumber(text)
  end
  return nil
end
local counters = {}
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local field, by = ARGV[i], integer(ARGV[i + 1])
  i = i + 2
  local base = 0
  if not (clear or removed[field]) then
    local text = sets[field]
    if text == nil then text = redis.call('HGET', KEYS[1], field) end
    if text then base = integer(text) end
  end
  if not base or not by then return { 'nan', field } end
  counters[#counters + 1] = field
  counters[#counters + 1] = base + by
end

if clear then
  local dead = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not META[f] then dead[#dead + 1] = f end
  end
  if #dead > 0 then redis.call('HDEL', KEYS[1], unpack(dead)) end
end
if #removes > 0 then redis.call('HDEL', KEYS[1], unpack(removes)) end
hset_all(KEYS[1], set_list, 1)
local written = {}
for j = 1, #counters, 2 do
  written[#written + 1] = counters[j]
  written[#written + 1] = int(counters[j + 1])
end
hset_all(KEYS[1], written, 1)
if ARGV[3] == 's' then
  redis.call('HSET', KEYS[1], '__u', ARGV[4])
elseif ARGV[3] == 'c' then
  redis.call('HDEL', KEYS[1], '__u')
end
if ARGV[5] ~= '' then
  local deadline = tonumber(ARGV[5])
  if deadline > abs then deadline = abs end
  redis.call('HSET', KEYS[1], '__i', int(deadline))
  count(expiry(idle, abs), -1)
  if deadline > now then
    redis.call('PEXPIRE', KEYS[1], int(deadline - now))
    count(deadline, 1)
  else
    redis.call('DEL', KEYS[1])
  end
end
redis.call('HINCRBY', KEYS[1], '__v', 1)
return { 'ok', m[4] or '', m[3], written }
