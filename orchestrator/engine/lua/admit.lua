-- Reclaim expired leases and admit waiting runs that fit. ARGV = prefix, limits, ttl_ms.
local limits, ttl = cjson.decode(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
-- Queues written before aging scored a run band * 10^13 + arrival: rescore those to the
-- aged order (arrival + band * AGING), or they would wait behind every newer run.
local pending = P .. 'pending'
local old = redis.call('ZRANGEBYSCORE', pending, '10000000000000', '+inf', 'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #old, 2 do
  local score = tonumber(old[i + 1])
  local band = math.floor(score / 1e13)
  redis.call('ZADD', pending, string.format('%.0f', score - band * 1e13 + band * AGING), old[i])
end
reclaim(now)
return admit_pending(limits, now, ttl)
