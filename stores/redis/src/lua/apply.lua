-- Conditional field-level write. KEYS: session, live count. ARGV: now, key prefix, then the
-- change as `apply_to` (apply_fn.lua) reads it.
return (apply_to(KEYS[1], ARGV, 2, tonumber(ARGV[1]), ARGV[2]))
