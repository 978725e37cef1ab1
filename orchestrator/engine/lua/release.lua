-- Give back all a run holds (or withdraw it from the queue) and admit who fits now.
-- ARGV = prefix, run, limits, ttl_ms. Returns the run ids admitted.
local run, limits, ttl = ARGV[2], cjson.decode(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
give_back(run)
if redis.call('ZREM', P .. 'pending', run) == 1 then pending_changed() end
redis.call('HDEL', P .. 'pending:needs', run)
reclaim(now)
return admit_pending(limits, now, ttl)
