-- The admission scripts' slower helpers: reasons, give-backs, the queue. Prepended after
-- common.lua, except in reserve.lua, which includes it (at `-- @quota`) after its common path.
local function num(v) return tonumber(v) or 0 end
local function fdiv(a, b) return math.floor(a / b) end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = fdiv(y >= 0 and y or y - 399, 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = fdiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + fdiv(yoe, 4) - fdiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

-- Milliseconds until the next UTC day and the next UTC month.
local function to_next_windows(now, month)
  local ny, nm = fdiv(month + 1, 12), (month + 1) % 12 + 1
  return (fdiv(now, 86400000) + 1) * 86400000 - now, days_from_civil(ny, nm, 1) * 86400000 - now
end

local function pending_changed() redis.call('HSET', Q, PENDING, redis.call('ZCARD', P .. 'pending')) end

-- A lease field's windows and units: day, month, {resource = units}.
local function read_lease(v)
  local parts = {}
  for word in string.gmatch(v or '', '%S+') do parts[#parts + 1] = word end
  local held = {}
  for i = 3, #parts, 2 do held[parts[i]] = tonumber(parts[i + 1]) end
  return num(parts[1]), num(parts[2]), held
end

local function lease_text(day, month, held)
  local parts = {string.format('%.0f', day), string.format('%.0f', month)}
  for res, q in pairs(held) do
    parts[#parts + 1] = res
    parts[#parts + 1] = string.format('%.15g', q)
  end
  return table.concat(parts, ' ')
end

-- Give back everything a run's lease still holds, to the windows it was counted in.
local function give_back(run)
  local field = '@' .. run
  local day, month, held = read_lease(redis.call('HGET', Q, field))
  local names = {}
  for res, q in pairs(held) do
    if q ~= 0 then names[#names + 1] = res end
  end
  if #names > 0 then
    local st = load(names)
    for _, res in ipairs(names) do
      count(st[res], day, month, -held[res])
      st[res].held = st[res].held - held[res]
    end
    save(st)
  end
  redis.call('HDEL', Q, field)
  redis.call('ZREM', P .. 'leases', run)
  redis.call('ZREM', P .. 'admitted', run)
end

-- Leases past their deadline belong to dead holders: their units come back here.
local function reclaim(now)
  local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, 200)
  for _, run in ipairs(expired) do give_back(run) end
  return #expired
end

-- A run's needs as {res, q, daily, monthly, rate} each (the compact form reserve.lua gets
-- in ARGV), rebuilt from a stored {res: q} and the JSON limits.
local function needs_list(map, limits)
  local list, names = {}, {}
  for res, q in pairs(map) do
    local lim = limits[res] or {}
    list[#list + 1] = {res, tonumber(q) or 0, tonumber(lim.d) or 0, tonumber(lim.m) or 0, tonumber(lim.r) or 0}
    names[#names + 1] = res
  end
  return list, names
end

-- nil when `needs` fits the state `st` now; else {never_fits, reasons, retry_after_ms}.
local function shortfall(needs, st, now)
  local reasons, never, retry = {}, false, 0
  local day, month = day_month(now)
  local to_day, to_month = to_next_windows(now, month)
  for _, n in ipairs(needs) do
    local res, q, s = n[1], n[2], st[n[1]]
    local checks = {{n[3], s.d == day and s.du or 0, 'daily', to_day},
      {n[4], s.m == month and s.mu or 0, 'monthly', to_month}}
    for _, c in ipairs(checks) do
      local limit, used = c[1], c[2]
      if limit > 0 then
        if q > limit then
          never = true
          reasons[#reasons + 1] = string.format('%s needs %.15g, more than its %s limit of %.15g',
            res, q, c[3], limit)
        elseif used + q > limit then
          reasons[#reasons + 1] = string.format('%s: %.15g of %.15g %s left, %.15g needed',
            res, math.max(0, limit - used), limit, c[3], q)
          retry = math.max(retry, c[4])
        end
      end
    end
    local cooling = s.cool - now
    if cooling > 0 then
      reasons[#reasons + 1] = string.format('%s is cooling down for %d ms (provider said 429)', res, cooling)
      retry = math.max(retry, cooling)
    end
    local rate = n[5]
    if rate > 0 then
      local interval = 60000 / rate
      local ahead = s.tat - now
      if ahead > 60000 - interval then
        reasons[#reasons + 1] = string.format('%s is at its rate of %.15g per minute', res, rate)
        retry = math.max(retry, ahead - (60000 - interval))
      end
    end
  end
  if #reasons == 0 then return nil end
  return {never, reasons, math.ceil(retry)}
end

-- Admit waiting runs strictly in queue order (priority, then arrival) while they fit.
local function admit_pending(limits, now, ttl)
  local runs = {}
  local day, month = day_month(now)
  for _ = 1, 100 do
    local head = redis.call('ZRANGE', P .. 'pending', 0, 0)[1]
    if not head then break end
    local needs, names = needs_list(cjson.decode(redis.call('HGET', P .. 'pending:needs', head) or '{}'), limits)
    local st = load(names)
    if not fits(needs, st, day, month, now) then break end
    take(head, needs, st, day, month)
    redis.call('ZADD', P .. 'leases', now + ttl, head)
    redis.call('ZREM', P .. 'pending', head)
    redis.call('HDEL', P .. 'pending:needs', head)
    admitted(head, now)
    runs[#runs + 1] = head
  end
  if #runs > 0 then pending_changed() end
  return runs
end
