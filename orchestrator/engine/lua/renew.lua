-- Extend a live run's lease. ARGV = prefix, run, ttl_ms. Returns 1, or 0 if it was lost.
local now = now_ms()
if redis.call('ZSCORE', P .. 'leases', ARGV[2]) then
  redis.call('ZADD', P .. 'leases', 'XX', now + tonumber(ARGV[3]), ARGV[2])
  return 1
end
return 0
