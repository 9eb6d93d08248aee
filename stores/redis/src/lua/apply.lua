-- Conditional field-level write. KEYS: session, live count. ARGV: now, key prefix, then the
-- change as `apply_to` (apply_fn.lua) reads it.
local A = {}
for i = 3, #ARGV do A[i - 2] = ARGV[i] end
return (apply_to(KEYS[1], A, tonumber(ARGV[1]), ARGV[2]))
