-- Settle one stage's use of one resource, once. ARGV = prefix, run, stage, resource,
-- reserved, actual. The reservation comes off the lease (and its window); the actual use
-- is counted in the current window. Returns the refund, or 'dup' if already settled.
local run, stage, res = ARGV[2], ARGV[3], ARGV[4]
local reserved, actual = tonumber(ARGV[5]), tonumber(ARGV[6])
local marker = P .. 'settled:' .. run .. ':' .. stage .. ':' .. res
if not redis.call('SET', marker, 1, 'NX', 'EX', 7 * 86400) then return 'dup' end
local now = now_ms()
local lease = P .. 'lease:' .. run
local held, lday, lmonth = unpack(redis.call('HMGET', lease, res, '_day', '_month'))
local released = math.min(reserved, num(held))
local st = load({res})
local s = st[res]
if released > 0 then
  redis.call('HSET', lease, res, string.format('%.15g', num(held) - released))
  s.held = s.held - released
  count(s, num(lday), num(lmonth), -released)
end
if actual > 0 then
  local day, month = day_month(now)
  count(s, day, month, actual)
end
save(st)
return tostring(released - actual)
