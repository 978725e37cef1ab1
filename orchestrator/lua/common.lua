-- Shared prelude of every admission script (prepended when the script is registered).
-- ARGV[1] is always the key prefix. Keys are built here rather than passed as KEYS because
-- which keys a run touches depends on its needs; this product runs on one Redis, not a cluster.
local P = ARGV[1]
local DAY_MS = 86400000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fdiv(a, b) return math.floor(a / b) end

-- Howard Hinnant's civil_from_days / days_from_civil, as in orchestrator/core/quota.py.
local function civil_from_days(days)
  local z = days + 719468
  local era = fdiv(z >= 0 and z or z - 146096, 146097)
  local doe = z - era * 146097
  local yoe = fdiv(doe - fdiv(doe, 1460) + fdiv(doe, 36524) - fdiv(doe, 146096), 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + fdiv(yoe, 4) - fdiv(yoe, 100))
  local mp = fdiv(5 * doy + 2, 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = fdiv(y >= 0 and y or y - 399, 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = fdiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + fdiv(yoe, 4) - fdiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

local function windows(now)
  local day = fdiv(now, DAY_MS)
  local y, m = civil_from_days(day)
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return day, y * 12 + m - 1, (day + 1) * DAY_MS - now, days_from_civil(ny, nm, 1) * DAY_MS - now
end

local function num(v) return tonumber(v) or 0 end
local function ckey(res, w, id) return P .. 'c:' .. res .. ':' .. w .. ':' .. id end

-- Give back everything a run's lease still holds, to the windows it was counted in.
local function give_back(run)
  local lease = P .. 'lease:' .. run
  local day = redis.call('HGET', lease, '_day')
  local month = redis.call('HGET', lease, '_month')
  local fields = redis.call('HGETALL', lease)
  for i = 1, #fields, 2 do
    local res, q = fields[i], num(fields[i + 1])
    if string.sub(res, 1, 1) ~= '_' and q ~= 0 then
      redis.call('INCRBYFLOAT', ckey(res, 'd', day), -q)
      redis.call('INCRBYFLOAT', ckey(res, 'm', month), -q)
      redis.call('INCRBYFLOAT', P .. 'held:' .. res, -q)
    end
  end
  redis.call('DEL', lease)
  redis.call('ZREM', P .. 'leases', run)
end

-- Leases past their deadline belong to dead holders: their units come back here.
local function reclaim(now)
  local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, 200)
  for _, run in ipairs(expired) do give_back(run) end
  return #expired
end

-- nil when `needs` fits now; else {never_fits, reasons, retry_after_ms}.
local function shortfall(needs, limits, now)
  local day, month, to_day, to_month = windows(now)
  local reasons, never, retry = {}, false, 0
  for res, q in pairs(needs) do
    local lim = limits[res] or {}
    local checks = {{'d', day, lim.d, 'daily', to_day}, {'m', month, lim.m, 'monthly', to_month}}
    for _, c in ipairs(checks) do
      local limit = tonumber(c[3]) or 0
      if limit > 0 then
        local used = num(redis.call('GET', ckey(res, c[1], c[2])))
        if q > limit then
          never = true
          table.insert(reasons, string.format('%s needs %.15g, more than its %s limit of %.15g',
            res, q, c[4], limit))
        elseif used + q > limit then
          table.insert(reasons, string.format('%s: %.15g of %.15g %s left, %.15g needed',
            res, math.max(0, limit - used), limit, c[4], q))
          retry = math.max(retry, c[5])
        end
      end
    end
    local cooling = redis.call('PTTL', P .. 'cooldown:' .. res)
    if cooling > 0 then
      table.insert(reasons, string.format('%s is cooling down for %d ms (provider said 429)', res, cooling))
      retry = math.max(retry, cooling)
    end
    local rate = tonumber(lim.r) or 0
    if rate > 0 then
      local interval = 60000 / rate
      local ahead = num(redis.call('GET', P .. 'rate:' .. res)) - now
      if ahead > 60000 - interval then
        table.insert(reasons, string.format('%s is at its rate of %.15g per minute', res, rate))
        retry = math.max(retry, ahead - (60000 - interval))
      end
    end
  end
  if #reasons == 0 then return nil end
  return {never, reasons, math.ceil(retry)}
end

local function take(run, needs, now, ttl)
  local day, month = windows(now)
  local lease = P .. 'lease:' .. run
  redis.call('HSET', lease, '_day', day, '_month', month)
  for res, q in pairs(needs) do
    if q > 0 then
      -- A window's counter gets its expiry once, when this write created it.
      if tonumber(redis.call('INCRBYFLOAT', ckey(res, 'd', day), q)) == q then
        redis.call('EXPIRE', ckey(res, 'd', day), 3 * 86400)
      end
      if tonumber(redis.call('INCRBYFLOAT', ckey(res, 'm', month), q)) == q then
        redis.call('EXPIRE', ckey(res, 'm', month), 40 * 86400)
      end
      redis.call('INCRBYFLOAT', P .. 'held:' .. res, q)
      redis.call('HSET', lease, res, q)
    end
  end
  redis.call('ZADD', P .. 'leases', now + ttl, run)
end

-- Admit waiting runs strictly in queue order (priority, then arrival) while they fit.
local function admit_pending(limits, now, ttl)
  local admitted = {}
  for _ = 1, 100 do
    local head = redis.call('ZRANGE', P .. 'pending', 0, 0)[1]
    if not head then break end
    local needs = cjson.decode(redis.call('HGET', P .. 'pending:needs', head) or '{}')
    if shortfall(needs, limits, now) then break end
    take(head, needs, now, ttl)
    redis.call('ZREM', P .. 'pending', head)
    redis.call('HDEL', P .. 'pending:needs', head)
    table.insert(admitted, head)
  end
  return admitted
end
