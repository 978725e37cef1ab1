-- Admit a whole run, all or nothing: ARGV = prefix, run, needs, limits, ttl_ms, score, wait.
-- Returns {status, reasons_json, retry_after_ms}.
local run, needs_json, ttl, score, wait = ARGV[2], ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local needs, limits = cjson.decode(needs_json), cjson.decode(ARGV[4])
local now = now_ms()
reclaim(now)
if redis.call('EXISTS', P .. 'lease:' .. run) == 1 then return {'admitted', '[]', 0} end
if redis.call('ZSCORE', P .. 'pending', run) then return {'queued', '["already waiting"]', 0} end
local short = shortfall(needs, limits, now)
if short and short[1] then return {'refused', cjson.encode(short[2]), 0} end
-- Runs already waiting at this priority or higher go first: no overtaking.
local ahead = redis.call('ZCOUNT', P .. 'pending', '-inf', score)
if not short and ahead == 0 then
  take(run, needs, now, ttl)
  return {'admitted', '[]', 0}
end
local reasons = short and short[2] or {string.format('%d earlier run(s) are waiting first', ahead)}
local retry = short and short[3] or 0
if wait == '1' then
  redis.call('ZADD', P .. 'pending', score, run)
  redis.call('HSET', P .. 'pending:needs', run, needs_json)
  return {'queued', cjson.encode(reasons), retry}
end
return {'refused', cjson.encode(reasons), retry}
