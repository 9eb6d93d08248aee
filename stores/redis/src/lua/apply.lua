-- Conditional field-level write. ARGV: now, clear ('1'/'0'), user op ('' / 's' / 'c'), user,
-- new idle deadline (''), then counted lists: removes, set pairs, increment pairs.
-- Reply: 'ok', then (when the user changes) the user before and the absolute deadline, which
-- the caller re-indexes with, then the counters as name/value pairs; one flat array.
-- This is the hot write path, so it is lean: on Redis 7.0 every value crossing between Lua
-- and Redis costs 1-2k instructions (bench/script_cost.py), so it reads only the fields the
-- checks need with one HMGET, writes with one HSET, builds no table it does not use and
-- replies with little. Numbers are handed to Redis as Lua numbers, which it prints as exact
-- integers below 2^53. Every check runs before the first write: a script is not rolled back
-- when it fails halfway.
-- List lengths are nearly always 0 or 1; tonumber (strtod) costs more than a comparison.
local function small(text)
  if text == '0' then return 0 end
  if text == '1' then return 1 end
  return tonumber(text)
end
local now = tonumber(ARGV[1])
local nr = small(ARGV[6])
local ns = small(ARGV[7 + nr])
local first_inc = 9 + nr + 2 * ns
local ni = small(ARGV[first_inc - 1])
local user_op = ARGV[3]

-- got[1]: the packed metadata; then the counters' current values.
local wanted = { '__m' }
for j = 0, ni - 1 do wanted[2 + j] = ARGV[first_inc + 2 * j] end
local got = redis.call('HMGET', KEYS[1], unpack(wanted))
if not got[1] then
  -- Not a session: an alias of a cycle, nothing, or damage.
  local a = redis.call('HMGET', KEYS[1], '__to', '__g')
  if a[1] then return alias(a[1], a[2], now) end
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  return { 'corrupt', 'metadata missing' }
end
local m = meta(got[1])
if not m then return { 'corrupt', 'metadata damaged' } end
if not alive(m, now) then return false end
local idle, abs = m.idle, m.abs

local clear = ARGV[2] == '1'
local reply = { 'ok' }
if user_op ~= '' then
  reply[2] = m.user or ''
  reply[3] = m.a
end
-- The counters go straight into the reply, and from there into the HSET.
local first_count = #reply + 1
if ni > 0 then
  -- Where a counter starts: 0 if this write clears or removes it, the value this write sets,
  -- or the stored one. Counters stay exact: Lua numbers are doubles, so both operands are held
  -- to 15 digits; the stored text must be a plain JSON integer.
  local removed, sets = {}, {}
  for j = 7, 6 + nr do removed[ARGV[j]] = true end
  for j = 8 + nr, 7 + nr + 2 * ns, 2 do sets[ARGV[j]] = ARGV[j + 1] end
  for j = 0, ni - 1 do
    local field = ARGV[first_inc + 2 * j]
    local by = tonumber(ARGV[first_inc + 2 * j + 1])
    if not by or by >= 1e15 or by <= -1e15 then return { 'nan', field } end
    local base = 0
    if not (clear or removed[field]) then
      local text = sets[field] or got[2 + j]
      if text and text ~= '0' then
        if #text > 16 or not string.find(text, '^-?[1-9]%d*$') then return { 'nan', field } end
        base = tonumber(text)
        if base >= 1e15 or base <= -1e15 then return { 'nan', field } end
      end
    end
    reply[#reply + 1] = field
    reply[#reply + 1] = base + by
  end
end

local removes = {}
for j = 7, 6 + nr do removes[#removes + 1] = ARGV[j] end
if clear then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not META[f] then removes[#removes + 1] = f end
  end
end
if #removes > 0 then redis.call('HDEL', KEYS[1], unpack(removes)) end

local writes = {}
for j = 8 + nr, 7 + nr + 2 * ns do writes[#writes + 1] = ARGV[j] end
for j = first_count, #reply do writes[#writes + 1] = reply[j] end
if user_op == 's' then m.user = ARGV[4] elseif user_op == 'c' then m.user = nil end
m.version = m.version + 1
local deadline = nil
if ARGV[5] ~= '' then
  deadline = math.min(tonumber(ARGV[5]), abs)
  slide(m, deadline)
end
writes[#writes + 1] = '__m'
writes[#writes + 1] = packed(m)
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
return reply
