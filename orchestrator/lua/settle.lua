-- Settle one stage's use of one resource, once. ARGV = prefix, run, stage, resource,
-- reserved, actual. The reservation comes off the lease (and its window); the actual use
-- is counted in the current window. Returns the refund, or 'dup' if already settled.
local run, stage, res = ARGV[2], ARGV[3], ARGV[4]
local reserved, actual = tonumber(ARGV[5]), tonumber(ARGV[6])
local marker = P .. 'settled:' .. run .. ':' .. stage .. ':' .. res
if not redis.call('SET', marker, 1, 'NX', 'EX', 7 * 86400) then return 'dup' end
local now = now_ms()
local day, month = windows(now)
local lease = P .. 'lease:' .. run
local held = num(redis.call('HGET', lease, res))
local released = math.min(reserved, held)
if released > 0 then
  local lday, lmonth = redis.call('HGET', lease, '_day'), redis.call('HGET', lease, '_month')
  redis.call('HINCRBYFLOAT', lease, res, -released)
  redis.call('INCRBYFLOAT', P .. 'held:' .. res, -released)
  redis.call('INCRBYFLOAT', ckey(res, 'd', lday), -released)
  redis.call('INCRBYFLOAT', ckey(res, 'm', lmonth), -released)
end
if actual > 0 then
  redis.call('INCRBYFLOAT', ckey(res, 'd', day), actual)
  redis.call('EXPIRE', ckey(res, 'd', day), 3 * 86400)
  redis.call('INCRBYFLOAT', ckey(res, 'm', month), actual)
  redis.call('EXPIRE', ckey(res, 'm', month), 40 * 86400)
end
return tostring(released - actual)
