-- Keeps one user's entry in the bucketed index (prelude.lua): for `create`, which files a
-- session with a user, for logins and listing on a cluster, and for listing, which drops
-- members whose session is gone or no longer the user's.
-- KEYS: the user's bucket hash. ARGV: the session prefix to prune by ('' on a cluster: the
-- client has pruned), user, member to add ('' none), then members to drop.
local prune = ARGV[1] ~= '' and ARGV[1] or nil
local add = ARGV[3] ~= '' and ARGV[3] or nil
for i = 4, #ARGV do index_edit(KEYS[1], ARGV[2], nil, ARGV[i], prune) end
index_edit(KEYS[1], ARGV[2], add, nil, prune)
return 1
