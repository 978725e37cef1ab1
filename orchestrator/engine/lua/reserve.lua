-- Admit a whole run, all or nothing. ARGV = prefix, run, priority rank (0 high, 1 normal,
-- 2 low), wait ('1'/'0'), then per resource: name, quantity. TTL (the lease, ms), AGING and
-- DEPTH (the queue's rules, see quota.lua) are compiled in by admission.py for its pool, and
-- so are the limits: `-- @limits` sets daily, monthly, rate (0: none) of `res`, and
-- limits_of(resource) returns them. Returns 1 when admitted (the run is noted in
-- P..'admitted' too, where the reconciler finds it if its launch is lost), else
-- {status, reasons_json, retry_ms}: status 'unseeded' means the quota counters are not in
-- Redis (a restart lost them) and the caller rebuilds them from the ledger first.
-- The common path is five commands whatever the run needs: TIME, ZADD NX (the lease's
-- deadline, doubling as the "already admitted" check), one HMGET and one HSET of the quota
-- state (the lease included), one ZADD to 'admitted'. Its most common case, a run of one
-- resource counted today with no run waiting, is the fast path below: flat locals, no
-- tables, no closures (common.lua's helpers are built after it, at `-- @common`). Any other
-- case falls through to the general path with the same `now` and ZADD result, which decides
-- it from scratch.
local run = ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leases = ARGV[1] .. 'leases'
local added = redis.call('ZADD', leases, 'NX', now + TTL, run)
if added == 1 and #ARGV == 6 then
  local res, q, key = ARGV[5], tonumber(ARGV[6]), ARGV[1] .. 'q'
  local v = redis.call('HMGET', key, '#pending', res, '#seeded')
  local s = v[2]
  if q and q > 0 and s and #s == 56 and v[3] and (not v[1] or tonumber(v[1]) == 0) then
    local d, du, m, mu, held, cool, tat = struct.unpack('<ddddddd', s)
    local day = math.floor(now / 86400000)
    -- @limits
    -- Counted today, so its month is the current one (see known_month); then fits().
    if d == day and m > 0 and not (cool > now)
      and not (daily > 0 and du + q > daily) and not (monthly > 0 and mu + q > monthly)
      and not (rate > 0 and tat - now > 60000 - 60000 / rate) then
      redis.call('HSET', key, res, struct.pack('<ddddddd', d, du + q, m, mu + q, held + q, cool, tat),
        '@' .. run, day .. ' ' .. m .. ' ' .. res .. ' ' .. ARGV[6])
      redis.call('ZADD', ARGV[1] .. 'admitted', now, run)
      return 1
    end
  end
end
-- @common
-- @limits_of
if redis.call('HEXISTS', Q, SEEDED) == 0 then
  if added == 1 then redis.call('ZREM', leases, run) end
  return {'unseeded', '[]', 0}
end
local rank, wait, ttl = tonumber(ARGV[3]), ARGV[4], TTL
local needs, names = {}, {}
for i = 5, #ARGV, 2 do
  local res = ARGV[i]
  local daily, monthly, rate = limits_of(res)
  needs[#needs + 1] = {res, tonumber(ARGV[i + 1]), daily, monthly, rate, ARGV[i + 1]}
  names[#names + 1] = res
end
-- A lease of this run that lapsed is given back and taken anew.
local lapsed = false
if added == 0 then
  if tonumber(redis.call('ZSCORE', leases, run)) > now then return 1 end  -- admitted before
  lapsed = true
end
local st, waiting = load(names)
local day = math.floor(now / 86400000)
local month = known_month(st, day)
if not month then day, month = day_month(now) end
if not lapsed and waiting == 0 and fits(needs, st, day, month, now) then
  take(run, needs, st, day, month)
  admitted(run, now)
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
    admitted(run, now)
    return 1
  end
end
local pending = P .. 'pending'
-- The queue's order: arrival plus AGING per priority level below high. Runs that arrive
-- within an aging period of one another go by priority, then arrival; a run that has waited
-- AGING longer than a newer one ranks a level above it, so a low run waiting 2 * AGING longer
-- than a high one goes first and no run waits forever behind ever newer high ones. The score
-- is fixed at arrival: the order needs no rescoring as time passes.
local score = string.format('%.0f', now + rank * AGING)
local ahead = 0
if waiting > 0 then
  if redis.call('ZSCORE', pending, run) then
    redis.call('ZREM', leases, run)
    return {'waiting', '["already waiting"]', 0}
  end
  -- Runs already waiting ahead in that order go first, unless this one may pass them.
  ahead = redis.call('ZCOUNT', pending, '-inf', score)
end
local short = shortfall(needs, st, now)
-- Units of dead holders (lapsed leases) come back only when they are needed: a run that
-- fits anyway skips the reclaim (release, admit and the reconciler reclaim too).
if short and not short[1] and reclaim(now) > 0 then
  st = load(names)
  short = shortfall(needs, st, now)
end
if not short and (ahead == 0 or may_pass(needs, st, day, month, now, ahead)) then
  take(run, needs, st, day, month)
  admitted(run, now)
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
  return {'waiting', cjson.encode(reasons), retry}
end
return {'refused', cjson.encode(reasons), retry}
