-- Keeps one user's entry in the bucketed index (prelude.lua): for `create`, which files a
-- session with a user, and for listing, which drops members whose session is gone or no
-- longer the user's. ARGV: key prefix, user, member to add ('' none), then members to drop.
local add = ARGV[3] ~= '' and ARGV[3] or nil
for i = 4, #ARGV do index_update(ARGV[1], ARGV[2], nil, ARGV[i]) end
index_update(ARGV[1], ARGV[2], add, nil)
return 1
