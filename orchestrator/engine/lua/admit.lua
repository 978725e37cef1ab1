-- Reclaim expired leases and admit waiting runs that fit. ARGV = prefix, limits, ttl_ms.
local limits, ttl = cjson.decode(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
reclaim(now)
return admit_pending(limits, now, ttl)
