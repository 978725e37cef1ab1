-- Settle one stage's use of one resource, once. ARGV = prefix, run, stage, resource,
-- reserved, actual. The reservation comes off the lease (and its window); the actual use
-- is counted in the current window. Returns the refund, or 'dup' if already settled.
local run, stage, res = ARGV[2], ARGV[3], ARGV[4]
local reserved, actual = tonumber(ARGV[5]), tonumber(ARGV[6])
local marker = P .. 'settled:' .. run .. ':' .. stage .. ':' .. res
if not redis.call('SET', marker, 1, 'NX', 'EX', 7 * 86400) then return 'dup' end
local now = now_ms()
local field = '@' .. run
local raw = redis.call('HGET', Q, field)
local lday, lmonth, held = read_lease(raw)
local released = math.min(reserved, held[res] or 0)
local st = load({res})
local s = st[res]
local extra = {}
if released > 0 then
  held[res] = held[res] - released
  extra = {field, lease_text(lday, lmonth, held)}
  s.held = s.held - released
  count(s, lday, lmonth, -released)
end
if actual > 0 then
  local day, month = day_month(now)
  count(s, day, month, actual)
end
save(st, extra)
return tostring(released - actual)
