-- GCRA: may `units` calls of a resource go now? ARGV = prefix, resource, rate_per_minute,
-- units. Returns 0 (allowed, counted) or the milliseconds to wait (nothing counted).
local res = ARGV[2]
local interval = 60000 / tonumber(ARGV[3])
local now = now_ms()
local st = load({res})
local new_tat = math.max(st[res].tat, now) + tonumber(ARGV[4]) * interval
local wait = new_tat - now - 60000
if wait > 0 then return math.ceil(wait) end
st[res].tat = new_tat
save(st)
return 0
