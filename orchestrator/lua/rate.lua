-- GCRA: may `units` calls of a resource go now? ARGV = prefix, resource, rate_per_minute,
-- units. Returns 0 (allowed, counted) or the milliseconds to wait (nothing counted).
local key = P .. 'rate:' .. ARGV[2]
local interval = 60000 / tonumber(ARGV[3])
local now = now_ms()
local tat = math.max(num(redis.call('GET', key)), now)
local new_tat = tat + tonumber(ARGV[4]) * interval
local wait = new_tat - now - 60000
if wait > 0 then return math.ceil(wait) end
redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return 0
