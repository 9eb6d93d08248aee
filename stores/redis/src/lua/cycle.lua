-- A whole cycle in one atomic step: the live session moves from KEYS[1] to KEYS[3] (RENAME
-- keeps its TTL), the change is applied there, the user index follows, and KEYS[1] becomes
-- an alias for the grace window (none when the grace has already ended: a privilege change).
-- KEYS: old session, live count, new session. ARGV: now, key prefix, new key (as stored in
-- the alias), grace until, then the change as `apply_to` reads it.
-- Reply: as apply_to, or { 'collision' } if the new key is taken, or { 'aliased' } if the old
-- key is itself an alias (only the current ID may cycle). Nothing is written unless it is 'ok'.
local now, prefix, grace_until = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 1 then return { 'collision' } end
local flat, m = read_live(now)
if not flat then
  if m and m[1] == 'alias' then return { 'aliased' } end
  return m
end
-- Checks first, on the old key: apply_to refuses before writing anything.
redis.call('RENAME', KEYS[1], KEYS[3])
local reply, after = apply_to(KEYS[3], ARGV, 4, now, prefix)
if not reply or reply[1] ~= 'ok' then
  -- Refused (limits, not an integer): put the session back where it was, untouched.
  redis.call('RENAME', KEYS[3], KEYS[1])
  return reply
end
local old_member = string.sub(KEYS[1], #prefix + 1)
local new_member = string.sub(KEYS[3], #prefix + 1)
announce_end(prefix, old_member)
if after.user and after.user ~= m.user then count_login() end
-- The old key leaves its user's index. apply_to filed a new user under the new key; an
-- unchanged user trades the old key for the new one in one pass over their entry.
if m.user and after.user == m.user then
  index_update(prefix, m.user, new_member, old_member)
elseif m.user then
  index_update(prefix, m.user, nil, old_member)
end
if grace_until > now then
  redis.call('HSET', KEYS[1], '__to', ARGV[3], '__g', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], int(grace_until - now))
  redis.call('HSET', KEYS[3], '__from', old_member)
elseif not indexed(prefix) then
  -- On a cluster the index is kept by the client after this script, so for a moment a
  -- revocation may find only the old key: a spent alias (no reader follows it) that lives
  -- a little while lets the revocation follow it here (see `destroy_user` in store.rs).
  redis.call('HSET', KEYS[1], '__to', ARGV[3], '__g', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], TOMBSTONE_MS)
  redis.call('HSET', KEYS[3], '__from', old_member)
end
return reply
