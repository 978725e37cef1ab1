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
  local list = {}
  for res, q in pairs(map) do
    local lim = limits[res] or {}
    list[#list + 1] = {res, tonumber(q) or 0, tonumber(lim.d) or 0, tonumber(lim.m) or 0, tonumber(lim.r) or 0}
  end
  return list
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

-- Backfilling. A run may go ahead of runs still waiting before it only when it cannot delay
-- them: it fits now, takes nothing one of them is short of (`short`: those units go to them
-- as they come back) and leaves them the units they want (`want`) of everything else. So the
-- head's start, and that of every run it passes, is never pushed back; a run is passed only
-- by runs that share none of its scarce resources (none waits forever on smaller ones).
-- These helpers read a run's stored needs as they are, {res: q}, with limits {d, m, r} per
-- resource (the JSON admit.lua and release.lua get): a pass looks at up to DEPTH runs, and
-- builds tables only for those it admits.
local NONE = {d = 0, m = 0, r = 0}

-- fits() for `q` units of one resource, in its state `s` under its limits `lim`.
local function room(s, q, lim, day, month, now)
  if lim.d > 0 and (s.d == day and s.du or 0) + q > lim.d then return false end
  if lim.m > 0 and (s.m == month and s.mu or 0) + q > lim.m then return false end
  if s.cool > now then return false end
  return not (lim.r > 0 and s.tat - now > 60000 - 60000 / lim.r)
end

-- True when a run needing `map` fits now behind the runs that stay waiting ahead of it.
local function fits_behind(map, st, want, short, limits, day, month, now)
  for res, q in pairs(map) do
    if short[res] or not room(st[res], q + (want[res] or 0), limits[res] or NONE, day, month, now) then
      return false
    end
  end
  return true
end

-- A run needing `map` stays waiting: the runs behind it must leave it what it wants and take
-- nothing it is short of. Returns how many of the pool's resources this closed to them.
local function stays(map, st, want, short, limits, day, month, now)
  local closed = 0
  for res, q in pairs(map) do
    local wanted = q + (want[res] or 0)
    if not short[res] and not room(st[res], wanted, limits[res] or NONE, day, month, now) then
      short[res] = true
      if limits[res] then closed = closed + 1 end
    end
    want[res] = wanted
  end
  return closed
end

-- Backfilling on arrival (reserve.lua): may a run that fits now (`needs`, whose resources
-- `st` holds) go ahead of the `ahead` runs waiting before it? Only within DEPTH of the head,
-- as in admit_pending, and only if it cannot delay any of them: only its own resources
-- matter, and it may not go once one of them is short for a run ahead.
local function may_pass(needs, st, day, month, now, ahead)
  if #needs == 0 then return true end  -- needs no unit of anything: delays nobody
  if ahead > DEPTH then return false end
  local runs = redis.call('ZRANGE', P .. 'pending', 0, ahead - 1)
  local maps = redis.call('HMGET', P .. 'pending:needs', unpack(runs))
  local want, lims = {}, {}
  for k, n in ipairs(needs) do lims[k] = {d = n[3], m = n[4], r = n[5]} end
  for i = 1, #runs do
    local theirs = cjson.decode(maps[i] or '{}')
    for k, n in ipairs(needs) do
      local res = n[1]
      local q = theirs[res]
      if q then
        local wanted = q + (want[res] or 0)
        if not room(st[res], wanted, lims[k], day, month, now) then return false end
        want[res] = wanted
      end
    end
  end
  for k, n in ipairs(needs) do
    if not room(st[n[1]], n[2] + (want[n[1]] or 0), lims[k], day, month, now) then return false end
  end
  return true
end

--[[ Admit waiting runs in queue order (priority, aged: see reserve.lua) while they fit, then,
past the first that does not, backfill: look at most DEPTH runs further for runs that may go
ahead (fits_behind). A pass thus costs O(DEPTH log N) however long the queue, and stops early
once every resource of the pool is short for a run ahead (nothing behind could go). At most
100 runs are admitted per pass; the queue is changed once, at the end. ]]
local function admit_pending(limits, now, ttl)
  local pending, stored = P .. 'pending', P .. 'pending:needs'
  local day, month = day_month(now)
  local kinds, closed = 0, 0
  for _ in pairs(limits) do kinds = kinds + 1 end
  local st, want, short = {}, {}, {}
  local runs, offset, past = {}, 0, -1  -- past: runs looked at after the first that stayed
  while #runs < 100 and past < DEPTH and (past < 0 or closed < kinds) do
    local batch = redis.call('ZRANGE', pending, offset, offset + 15)
    if #batch == 0 then break end
    offset = offset + #batch
    local maps = redis.call('HMGET', stored, unpack(batch))
    for i, run in ipairs(batch) do
      if #runs >= 100 or past >= DEPTH or (past >= 0 and closed >= kinds) then break end
      local map, missing = cjson.decode(maps[i] or '{}'), nil
      for res in pairs(map) do
        if not st[res] then
          missing = missing or {}
          missing[#missing + 1] = res
        end
      end
      if missing then
        for res, s in pairs(load(missing)) do st[res] = s end
      end
      if past >= 0 then past = past + 1 end
      if fits_behind(map, st, want, short, limits, day, month, now) then
        take(run, needs_list(map, limits), st, day, month)
        redis.call('ZADD', P .. 'leases', now + ttl, run)
        admitted(run, now)
        runs[#runs + 1] = run
      else
        if past < 0 then past = 0 end
        closed = closed + stays(map, st, want, short, limits, day, month, now)
      end
    end
  end
  if #runs > 0 then
    redis.call('ZREM', pending, unpack(runs))
    redis.call('HDEL', stored, unpack(runs))
    pending_changed()
  end
  return runs
end
