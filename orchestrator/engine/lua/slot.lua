-- Take (or renew) a capacity slot of a worker type. ARGV = prefix, worker_type, holder, max,
-- ttl_ms. Slots are leases too: a holder that dies frees its slot when the deadline passes.
-- A slot taken anew notes when in P..'slot_start:'..worker (free.lua turns it into busy time).
-- Returns 2 for a slot taken now, 1 for one the holder already held, 0 when none is free.
local key = P .. 'slots:' .. ARGV[2]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local deadline = now + tonumber(ARGV[5])
if redis.call('ZSCORE', key, ARGV[3]) then
  redis.call('ZADD', key, deadline, ARGV[3])
  return 1
end
if redis.call('ZCARD', key) < tonumber(ARGV[4]) then
  redis.call('ZADD', key, deadline, ARGV[3])
  redis.call('HSET', P .. 'slot_start:' .. ARGV[2], ARGV[3], now)
  return 2
end
return 0
