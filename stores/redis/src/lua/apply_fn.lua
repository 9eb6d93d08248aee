-- The field-level write shared by `apply` and `cycle`: `apply_to(key, A, o, now, prefix)`.
--
-- A[o + 1 ...], the change (built by `write_args` in store.rs; the one layout both sides
-- keep; A is the script's ARGV and o how many arguments come before the change, so that
-- nothing is copied on the hot path):
--   1 clear ('1'/'0')   2 user op ('' keep, 's' set, 'c' clear)   3 user   4 new idle deadline ('')
--   5 max fields ('')   6 max bytes ('')   7 new absolute deadline ('')
--   then four counted lists: removes (n, names), sets (n, name/value pairs),
--   increments (n, name/step pairs), expectations (n, name/present ('1'/'0')/value
--   triples: a compare-and-set, checked before anything is written).
-- Reply: { 'ok', name1, value1, ... } with the counters' new values, or false (no live
-- session), { 'alias', target }, { 'nan', field }, { 'limit', 'fields' | 'bytes' },
-- { 'conflict', field } (an expectation failed),
-- { 'corrupt', what }. The second result is the metadata as written.
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

-- Whether the session `key` stays within the limits once `after` (field -> new value, sets
-- and counters alike) is written and, when `clear`, every other field goes (else those in
-- `removed`). Values count at their length, as every store counts them. Runs only when a
-- write adds a field or grows one, so the HGETALL is off the common path.
local function within_limits(key, after, clear, removed, max_fields, max_bytes, user)
  local fields, bytes = 0, #(user or '')
  if not clear then
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat, 2 do
      local f = flat[i]
      if not META[f] and not removed[f] and after[f] == nil then
        fields = fields + 1
        bytes = bytes + #f + #flat[i + 1]
      end
    end
  end
  for f, v in pairs(after) do
    fields = fields + 1
    bytes = bytes + #f + #v
  end
  if max_fields and fields > max_fields then return { 'limit', 'fields' } end
  if max_bytes and bytes > max_bytes then return { 'limit', 'bytes' } end
  return nil
end

local function apply_to(key, A, o, now, prefix)
  local nr = small(A[o + 8])
  local ns = small(A[o + 9 + nr])
  local first_inc = 11 + nr + 2 * ns
  local ni = small(A[o + first_inc - 1])
  local first_exp = first_inc + 2 * ni + 1
  local ne = small(A[o + first_exp - 1] or '0')
  local user_op = A[o + 2]

  -- got[1]: the packed metadata; then the counters' current values; then, when limits are
  -- given, whether each set field exists already (a new one counts against the limits).
  local limited = A[o + 5] ~= '' or A[o + 6] ~= ''
  local wanted = { '__m' }
  for j = 0, ni - 1 do wanted[2 + j] = A[o + first_inc + 2 * j] end
  if limited then
    for j = 10 + nr, 9 + nr + 2 * ns, 2 do wanted[#wanted + 1] = A[o + j] end
  end
  local got = redis.call('HMGET', key, unpack(wanted))
  if not got[1] then
    -- Not a session: an alias of a cycle, nothing, or a stub (a script-free write's leftover).
    local a = redis.call('HMGET', key, '__to', '__g')
    if a[1] then return alias(a[1], a[2], now) end
    return false
  end
  local m = meta(got[1])
  if not m then return { 'corrupt', 'metadata damaged' } end
  if not alive(m, now) then return false end
  local idle, abs = m.idle, m.abs
  if ne > 0 then
    local names = {}
    for j = 0, ne - 1 do names[j + 1] = A[o + first_exp + 3 * j] end
    local current = redis.call('HMGET', key, unpack(names))
    for j = 0, ne - 1 do
      local present = A[o + first_exp + 3 * j + 1] == '1'
      local have = current[j + 1]
      if (present and have ~= A[o + first_exp + 3 * j + 2]) or (not present and have) then
        return { 'conflict', names[j + 1] }
      end
    end
  end

  local clear = A[o + 1] == '1'
  local reply = { 'ok' }
  -- With limits: the fields this write leaves (name -> value) and whether it adds or grows
  -- one.
  local after, grows, removed = {}, false, {}
  for j = 9, 8 + nr do removed[A[o + j]] = true end
  if limited then
    for j = 0, ns - 1 do
      local field, value = A[o + 10 + nr + 2 * j], A[o + 11 + nr + 2 * j]
      local old = got[2 + ni + j]
      after[field] = value
      if not old or #value > #old then grows = true end
    end
    if user_op == 's' and #A[o + 3] > #(m.user or '') then grows = true end
  end
  if ni > 0 then
    -- Where a counter starts: 0 if this write clears or removes it, the value this write sets,
    -- or the stored one. Counters stay exact: Lua numbers are doubles, so both operands are held
    -- to 15 digits; the stored text must be a plain JSON integer.
    local sets = {}
    for j = 10 + nr, 9 + nr + 2 * ns, 2 do sets[A[o + j]] = A[o + j + 1] end
    for j = 0, ni - 1 do
      local field = A[o + first_inc + 2 * j]
      local by = tonumber(A[o + first_inc + 2 * j + 1])
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
      local result = base + by
      if result >= 1e15 or result <= -1e15 then return { 'nan', field } end
      if limited then
        -- The counter's text after this write, where it is new or longer than before.
        local text = int(result)
        local before = (not (clear or removed[field]) and (sets[field] or got[2 + j])) or nil
        if not before or #text > #before then
          after[field] = text
          grows = true
        elseif sets[field] then
          after[field] = text
        end
      end
      reply[#reply + 1] = field
      reply[#reply + 1] = result
    end
  end
  if grows then
    local user = m.user
    if user_op == 's' then user = A[o + 3] elseif user_op == 'c' then user = nil end
    local over = within_limits(key, after, clear, removed, tonumber(A[o + 5]),
      tonumber(A[o + 6]), user)
    if over then return over end
  end

  local removes = {}
  for j = 9, 8 + nr do removes[#removes + 1] = A[o + j] end
  if clear then
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if not META[f] then removes[#removes + 1] = f end
    end
  end
  if #removes > 0 then redis.call('HDEL', key, unpack(removes)) end

  local writes = {}
  for j = 10 + nr, 9 + nr + 2 * ns do writes[#writes + 1] = A[o + j] end
  for j = 2, #reply do writes[#writes + 1] = reply[j] end
  local before = m.user
  if user_op == 's' then m.user = A[o + 3] elseif user_op == 'c' then m.user = nil end
  m.version = m.version + 1
  -- New deadlines: the absolute one first (a session given its own lifetime, never before
  -- its creation), then the idle one, which never lies beyond it.
  local moved = false
  if A[o + 7] ~= '' then
    m.abs = math.max(tonumber(A[o + 7]), m.created)
    m.a = int(m.abs - m.created)
    if m.idle > m.abs then slide(m, m.abs) end
    moved = true
  end
  if A[o + 4] ~= '' then
    slide(m, math.min(tonumber(A[o + 4]), m.abs))
    moved = true
  end
  writes[#writes + 1] = '__m'
  writes[#writes + 1] = packed(m)
  hset_all(key, writes, 1)
  if moved then
    count(expiry(idle, abs), -1)
    local deadline = expiry(m.idle, m.abs)
    if deadline > now then
      redis.call('PEXPIRE', key, deadline - now)
      count(deadline, 1)
    else
      redis.call('DEL', key)
    end
  end
  if user_op ~= '' and before ~= m.user then
    local member = string.sub(key, #prefix + 1)
    if before then index_update(prefix, before, nil, member) end
    if m.user then index_update(prefix, m.user, member, nil) end
  end
  return reply, m
end
