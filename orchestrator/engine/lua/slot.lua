-- Take (or renew) a capacity slot of a worker type. ARGV = prefix, worker_type, holder, max,
-- ttl_ms[, rank_ms, wait_ttl_ms]. Slots are leases too: a holder that dies frees its slot when
-- the deadline passes. A slot taken anew notes when in P..'slot_start:'..worker (free.lua
-- turns it into busy time).
-- With rank_ms (a stage asking to start: its run's priority rank times the aging period), the
-- stages waiting for a slot go by priority and age, as runs waiting for admission do: a free
-- slot goes to the asker only if fewer waiters rank before it than slots are free; else it
-- waits in P..'slot_wait:'..worker (score: when it first asked + rank_ms), kept there while it
-- keeps asking (P..'slot_wait_until:'..worker: its deadline, wait_ttl_ms after its last ask).
-- Returns 2 for a slot taken now, 1 for one the holder already held, 0 when none is free.
local key, holder = P .. 'slots:' .. ARGV[2], ARGV[3]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local deadline = now + tonumber(ARGV[5])
if redis.call('ZSCORE', key, holder) then
  redis.call('ZADD', key, deadline, holder)
  return 1
end
local free = tonumber(ARGV[4]) - redis.call('ZCARD', key)
local function take()
  redis.call('ZADD', key, deadline, holder)
  redis.call('HSET', P .. 'slot_start:' .. ARGV[2], holder, now)
  return 2
end
if not ARGV[6] then  -- a renewal (max 0) or a caller without a rank: first come
  if free > 0 then return take() end
  return 0
end
local waiting, until_ = P .. 'slot_wait:' .. ARGV[2], P .. 'slot_wait_until:' .. ARGV[2]
local gone = redis.call('ZRANGEBYSCORE', until_, '-inf', now)
if #gone > 0 then  -- waiters that stopped asking (their run ended, their worker died)
  redis.call('ZREM', waiting, unpack(gone))
  redis.call('ZREMRANGEBYSCORE', until_, '-inf', now)
end
local mine = tonumber(redis.call('ZSCORE', waiting, holder)) or (now + tonumber(ARGV[6]))
if free > 0 and redis.call('ZCOUNT', waiting, '-inf', '(' .. mine) < free then
  redis.call('ZREM', waiting, holder)
  redis.call('ZREM', until_, holder)
  return take()
end
redis.call('ZADD', waiting, mine, holder)
redis.call('ZADD', until_, now + tonumber(ARGV[7]), holder)
return 0
