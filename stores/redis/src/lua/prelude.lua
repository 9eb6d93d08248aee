-- Shared by every session script. KEYS[1] is the session hash; KEYS[2] the live-count hash,
-- which counts sessions per minute of expiry so `stats` can count without scanning keys (on
-- a cluster, one per hash tag, in the session's slot).
-- Fields that are not session data: the packed metadata, a cycle's alias (`__to`, `__g`), and
-- on the renewed session the alias that still reaches it (`__from`, so revoking ends both).
local META = { __m = true, __to = true, __g = true, __from = true }
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

-- Logins (a session given a user it did not have) are counted in the same hash, field
-- `logins`, for `cloakroom stats --watch`; `stats` skips that field.
local function count_login()
  redis.call('HINCRBY', KEYS[2], 'logins', 1)
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

-- A session's metadata lives in one field, `__m`: 'created|idle|absolute|version', then
-- '|user' when it has one (last, so a user may contain '|'); the deadlines are offsets from
-- 'created' (8 or 9 digits, not 13: about 16 bytes less per session). One field instead of five halves
-- Redis's work for a read's HGETALL. `meta` gives the deadlines and version as numbers and
-- keeps the texts, so `packed` prints again only what changed (printing a number costs as
-- much as parsing one); `slide` moves the idle deadline in both. nil if the text is damaged.
local function meta(text)
  if not text then return nil end
  local c, i, a, v, rest = string.match(text, '^(%d+)|(%d+)|(%d+)|(%d+)(.*)$')
  -- 1 to 15 digits each, as the client's parser (codec.rs) accepts: beyond that a double
  -- is no longer exact.
  if not c or #c > 15 or #i > 15 or #a > 15 or #v > 15 then return nil end
  -- The deadlines are stored as offsets from the creation time (shorter text, fewer bytes).
  local created = tonumber(c)
  local m = { c = c, i = i, a = a, created = created, idle = created + tonumber(i),
              abs = created + tonumber(a), version = tonumber(v) }
  if rest ~= '' then
    if string.sub(rest, 1, 1) ~= '|' then return nil end
    m.user = string.sub(rest, 2)
  end
  return m
end

local function slide(m, deadline)
  m.idle, m.i = deadline, int(deadline - m.created)
end

local function packed(m)
  local text = m.c .. '|' .. m.i .. '|' .. m.a .. '|' .. int(m.version)
  if m.user then return text .. '|' .. m.user end
  return text
end

-- The target of a cycle's alias while its grace window (`__g`) lasts; a spent alias is deleted.
local function alias(to, grace_until, now)
  if now < (tonumber(grace_until) or 0) then return { 'alias', to } end
  redis.call('DEL', KEYS[1])
  return false
end

-- Whether a session is alive by the caller's clock; a dead one is deleted here.
local function alive(m, now)
  if now >= m.idle or now >= m.abs then
    redis.call('DEL', KEYS[1])
    count(expiry(m.idle, m.abs), -1)
    return false
  end
  return true
end

-- HGETALL of a live session with its metadata; otherwise nil and the reply to give instead
-- (false when there is no live session, the alias's target, or a corruption report).
local function read_live(now)
  local flat = redis.call('HGETALL', KEYS[1])
  if #flat == 0 then return nil, false end
  local found = {}
  for i = 1, #flat, 2 do
    if META[flat[i]] then found[flat[i]] = flat[i + 1] end
  end
  if found.__to then return nil, alias(found.__to, found.__g, now) end
  -- No metadata: a stub that a script-free write left where a session had gone.
  if not found.__m then return nil, false end
  local m = meta(found.__m)
  if not m then return nil, { 'corrupt', 'metadata damaged' } end
  if not alive(m, now) then return nil, false end
  return flat, m
end

-- The per-user index, bucketed: a user's session keys (22 characters each, concatenated) are
-- one field of one of INDEX_BUCKETS hashes, `<prefix>users:<bucket>`. Many users share a hash,
-- so the index costs a few dozen bytes per session instead of a key per user. The bucket is
-- a small hash of the user name that `Keys::bucket` in keys.rs computes alike (a test holds
-- the two together).
-- On Redis Cluster the session scripts leave the index alone: a script may touch one slot
-- only, and a user's sessions live in many. There the session prefix the scripts get ends
-- with its hash tag, `sid:{a7}`, and the client keeps the index with `index.lua`.
local INDEX_BUCKETS = 256
local KEY_CHARS = 22

-- Tells every app instance that the session `member` ended (logout, revocation, a cycle
-- away from it), so that none of them accepts its fallback ticket during an outage. The
-- channel is the configured prefix (a cluster tag dropped) and `ended`; pub/sub messages
-- reach subscribers on every node and replica.
local function announce_end(prefix, member)
  local channel = string.gsub(prefix, '{%x%x}$', '') .. 'ended'
  redis.call('PUBLISH', channel, member)
end

-- How long a cluster cycle's spent alias outlives the cycle (see cycle.lua).
local TOMBSTONE_MS = 10000

local function indexed(prefix)
  return string.sub(prefix, -1) ~= '}'
end

local function index_bucket(prefix, user)
  local h = 0
  for i = 1, #user do h = (h * 33 + string.byte(user, i)) % INDEX_BUCKETS end
  return prefix .. 'users:' .. h
end

-- Past this many members a user's list moves out of its bucket into a set of its own, so
-- that an edit costs the same for a user with thousands of sessions (SADD/SREM) instead of
-- rewriting the whole list; the bucket keeps SPILLED in its place. Small lists stay packed
-- in the bucket, the cheapest layout for the common user with a few sessions.
local INDEX_SPILL = 64
local SPILLED = '*'

-- The set `user`'s list spills into: under the prefix like every key, and tagged with the
-- bucket's name, so that on a cluster it lives in the bucket's slot (prefixes never hold
-- braces). Matches `Keys::user_spill`.
local function spill_key(bucket, user)
  return bucket .. ':{' .. bucket .. '}:' .. user
end

-- Where `member` starts in `list` (on a member boundary), or nil.
local function find_member(list, member)
  local from = 1
  while true do
    local at = string.find(list, member, from, true)
    if not at then return nil end
    if (at - 1) % KEY_CHARS == 0 then return at end
    from = at + 1
  end
end

local function without(list, at)
  return string.sub(list, 1, at - 1) .. string.sub(list, at + KEY_CHARS)
end

-- Adds `add` and drops `drop` (either may be nil) from `user`'s list in the hash `bucket`.
-- Given the session prefix (standalone), it also checks at most four members (the two
-- oldest and two others) and drops those whose session is gone: a bounded number, so a login
-- costs the same whether the user has one session or thousands (the list is pruned a few
-- members at a time; listing prunes it whole). On a cluster (`prune` nil) the client
-- prunes, having read the members' sessions.
local function index_edit(bucket, user, add, drop, prune)
  local list = redis.call('HGET', bucket, user) or ''
  if list == SPILLED then
    local set = spill_key(bucket, user)
    if drop then redis.call('SREM', set, drop) end
    if add then redis.call('SADD', set, add) end
    if prune then
      for _, member in ipairs(redis.call('SRANDMEMBER', set, 4)) do
        if member ~= add and redis.call('EXISTS', prune .. member) == 0 then
          redis.call('SREM', set, member)
        end
      end
    end
    if redis.call('SCARD', set) == 0 then
      redis.call('DEL', set)
      redis.call('HDEL', bucket, user)
    end
    return
  end
  if drop then
    local at = find_member(list, drop)
    if at then list = without(list, at) end
  end
  if add and not find_member(list, add) then list = list .. add end
  local n = math.floor(#list / KEY_CHARS)
  if prune and n > 0 then
    local picks, seen = {}, {}
    local function pick(i)
      if i >= 1 and i <= n and not seen[i] then
        seen[i] = true
        picks[#picks + 1] = i
      end
    end
    pick(1)
    pick(2)
    -- Two more at positions taken from the (random) key being added or dropped, so that
    -- every member is reached over time.
    local seed = add or drop or list
    local a, b, c = string.byte(seed, 1, 3)
    pick((a * 4096 + b * 64 + c) % n + 1)
    pick((c * 4096 + a * 64 + b) % n + 1)
    table.sort(picks, function(x, y) return x > y end)
    for _, i in ipairs(picks) do
      local at = (i - 1) * KEY_CHARS + 1
      local member = string.sub(list, at, at + KEY_CHARS - 1)
      if member ~= add and redis.call('EXISTS', prune .. member) == 0 then
        list = without(list, at)
      end
    end
  end
  if #list == 0 then
    redis.call('HDEL', bucket, user)
  elseif #list > INDEX_SPILL * KEY_CHARS then
    local members = {}
    for at = 1, #list, KEY_CHARS do members[#members + 1] = string.sub(list, at, at + KEY_CHARS - 1) end
    redis.call('SADD', spill_key(bucket, user), unpack(members))
    redis.call('HSET', bucket, user, SPILLED)
  else
    redis.call('HSET', bucket, user, list)
  end
end

-- The session scripts' way in: standalone only (see above).
local function index_update(prefix, user, add, drop)
  if indexed(prefix) then
    index_edit(index_bucket(prefix, user), user, add, drop, prefix)
  end
end
