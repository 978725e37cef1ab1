-- Shared prelude of every admission script (prepended when the script is registered;
-- reserve.lua takes it after its fast path, at `-- @common`), kept to what reserve.lua's
-- common path needs: every `local function` here is a closure built on each call. The rest
-- lives in quota.lua, which reserve.lua pulls in after that path.
-- ARGV[1] is always the key prefix. Keys are built here rather than passed as KEYS because
-- which keys a run touches depends on its needs; this product runs on one Redis, not a cluster.
--
-- Quota state lives in ONE hash, P..'q', read with one HMGET and written with one HSET
-- whatever a run needs: field <resource> = seven little-endian doubles (struct '<ddddddd',
-- no number formatting or parsing on the hot path) d du m mu held cool tat, where du counts
-- (used + held) units in UTC day d (epoch days), mu in month m (year * 12 + month - 1) --
-- a counter of an older window is simply stale, so nothing expires --, held is what live
-- leases reserve, cool a cooldown deadline and tat the rate's GCRA timestamp (epoch ms).
-- Field '#pending' mirrors ZCARD of the pending queue. A run's lease is field '@'..run of the
-- same hash, 'day month resource units ...' (the windows its units were counted in), plus
-- its deadline in the zset P..'leases': admitting a run writes the counters and the lease
-- in one HSET.
local P = ARGV[1]
local Q = P .. 'q'
local PENDING = '#pending'
-- Field '#seeded' says the counters were rebuilt from the database's ledger since Redis
-- started (a restart without persistence forgets them; see seed.lua).
local SEEDED = '#seeded'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Day and month windows of `now`: Howard Hinnant's civil_from_days, as in core/quota.py.
local function day_month(now)
  local floor = math.floor
  local day = floor(now / 86400000)
  local z = day + 719468
  local era = floor((z >= 0 and z or z - 146096) / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return day, y * 12 + m - 1
end

-- A resource's state from its packed field (nil, or not 56 bytes: nothing counted yet).
local function unpack_state(v)
  if not v or #v ~= 56 then return {d = 0, du = 0, m = 0, mu = 0, held = 0, cool = 0, tat = 0} end
  local d, du, m, mu, held, cool, tat = struct.unpack('<ddddddd', v)
  return {d = d, du = du, m = m, mu = mu, held = held, cool = cool, tat = tat}
end

-- The month of `day` as the state already knows it (a resource counted today carries this
-- month), so the common path skips the calendar arithmetic; nil if no resource does.
local function known_month(st, day)
  for _, s in pairs(st) do
    if s.d == day and s.m > 0 then return s.m end
  end
  return nil
end

-- The state of resources `names` and the number of waiting runs, in one HMGET.
local function load(names)
  local v = redis.call('HMGET', Q, PENDING, unpack(names))
  local st = {}
  for i, res in ipairs(names) do st[res] = unpack_state(v[i + 1]) end
  return st, tonumber(v[1]) or 0
end

-- Write back the state of every resource in `st` (and the field/value pairs in `extra`), in
-- one HSET.
local function save(st, extra)
  local args = extra or {}
  for res, s in pairs(st) do
    args[#args + 1] = res
    args[#args + 1] = struct.pack('<ddddddd', s.d, s.du, s.m, s.mu, s.held, s.cool, s.tat)
  end
  if #args > 0 then redis.call('HSET', Q, unpack(args)) end
end

-- Count `q` (negative gives back) in windows `day` and `month` of a resource's state; a
-- window older than the current one is gone, a newer one starts from zero.
local function count(s, day, month, q)
  if s.d == day then s.du = s.du + q elseif day > s.d then s.d, s.du = day, math.max(0, q) end
  if s.m == month then s.mu = s.mu + q elseif month > s.m then s.m, s.mu = month, math.max(0, q) end
end

-- True when `needs` ({res, q, daily, monthly, rate} each; limits of 0 mean none) fits now.
local function fits(needs, st, day, month, now)
  for _, n in ipairs(needs) do
    local q, s = n[2], st[n[1]]
    if n[3] > 0 and (s.d == day and s.du or 0) + q > n[3] then return false end
    if n[4] > 0 and (s.m == month and s.mu or 0) + q > n[4] then return false end
    if s.cool > now then return false end
    if n[5] > 0 and s.tat - now > 60000 - 60000 / n[5] then return false end
  end
  return true
end

-- Count `needs` in `st` and write it with the run's lease (one HSET); the caller puts the
-- run in the leases zset.
local function take(run, needs, st, day, month)
  local lease = {day, month}
  for _, n in ipairs(needs) do
    local res, q = n[1], n[2]
    if q > 0 then
      local s = st[res]
      count(s, day, month, q)
      s.held = s.held + q
      lease[#lease + 1] = res
      lease[#lease + 1] = n[6] or string.format('%.15g', q)  -- the caller's own text if given
    end
  end
  save(st, {'@' .. run, table.concat(lease, ' ')})
end

-- Note an admitted run where the reconciler finds it until its launch removes it: whatever
-- admits a run (reserve, a release, the reconciler), its launch cannot be lost with the
-- process that admitted it.
local function admitted(run, now)
  redis.call('ZADD', P .. 'admitted', now, run)
end
