-- Admit a whole run, all or nothing. ARGV = prefix, run, priority rank (0 high, 1 normal,
-- 2 low), wait ('1'/'0'), then per resource: name, quantity. TTL (the lease, ms) and
-- limits_of(resource) -> daily, monthly, rate (0: none) are compiled into the script by
-- admission.py for its pool. Returns 1 when admitted, else {status, reasons_json, retry_ms}.
-- The common path is four commands whatever the run needs: TIME, ZADD NX (the lease's
-- deadline), one HMGET and one HSET of the quota state (the lease included).
local run, rank, wait, ttl = ARGV[2], tonumber(ARGV[3]), ARGV[4], TTL
local needs, names = {}, {}
for i = 5, #ARGV, 2 do
  local res = ARGV[i]
  local daily, monthly, rate = limits_of(res)
  needs[#needs + 1] = {res, tonumber(ARGV[i + 1]), daily, monthly, rate, ARGV[i + 1]}
  names[#names + 1] = res
end
local now = now_ms()
local leases = P .. 'leases'
-- Taking the lease's place first doubles as the "already admitted" check (idempotent); a
-- lease of this run that lapsed is given back and taken anew.
local lapsed = false
if redis.call('ZADD', leases, 'NX', now + ttl, run) == 0 then
  if tonumber(redis.call('ZSCORE', leases, run)) > now then return 1 end
  lapsed = true
end
local st, waiting = load(names)
local day = math.floor(now / 86400000)
local month = known_month(st, day)
if not month then day, month = day_month(now) end
if not lapsed and waiting == 0 and fits(needs, st, day, month, now) then
  take(run, needs, st, day, month)
  return 1
end
-- The slow path: reasons, runs waiting ahead, the queue.
-- @quota
if lapsed then
  give_back(run)
  redis.call('ZADD', leases, now + ttl, run)
  st, waiting = load(names)
  if waiting == 0 and fits(needs, st, day, month, now) then
    take(run, needs, st, day, month)
    return 1
  end
end
local pending = P .. 'pending'
local score = string.format('%.0f', rank * 10000000000000 + now)  -- priority band, then arrival
local ahead = 0
if waiting > 0 then
  if redis.call('ZSCORE', pending, run) then
    redis.call('ZREM', leases, run)
    return {'queued', '["already waiting"]', 0}
  end
  -- Runs already waiting at this priority or higher go first: no overtaking.
  ahead = redis.call('ZCOUNT', pending, '-inf', score)
end
local short = shortfall(needs, st, now)
-- Units of dead holders (lapsed leases) come back only when they are needed: a run that
-- fits anyway skips the reclaim (release, admit and the reconciler reclaim too).
if short and not short[1] and reclaim(now) > 0 then
  st = load(names)
  short = shortfall(needs, st, now)
end
if not short and ahead == 0 then
  take(run, needs, st, day, month)
  return 1
end
redis.call('ZREM', leases, run)
if short and short[1] then return {'refused', cjson.encode(short[2]), 0} end
local reasons = short and short[2] or {string.format('%d earlier run(s) are waiting first', ahead)}
local retry = short and short[3] or 0
if wait == '1' then
  local map = {}
  for _, n in ipairs(needs) do map[n[1]] = n[2] end
  redis.call('ZADD', pending, score, run)
  redis.call('HSET', P .. 'pending:needs', run, cjson.encode(map))
  pending_changed()
  return {'queued', cjson.encode(reasons), retry}
end
return {'refused', cjson.encode(reasons), retry}
