-- Release a capacity slot (or a place waiting for one) and count the time it was held as
-- busy time of its worker type.
-- ARGV = prefix, worker_type, holder, bucket_ms, keep_buckets. The interval since slot.lua
-- took the slot is added, cut at bucket edges, to hash P..'busy:'..worker (field: bucket
-- number = epoch ms // bucket_ms, value: busy ms in it); core/scaling.py reads windows of
-- it. Buckets older than keep_buckets go when the hash grows past them. Returns the busy ms.
local worker, holder = ARGV[2], ARGV[3]
local bucket, keep = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREM', P .. 'slots:' .. worker, holder)
redis.call('ZREM', P .. 'slot_wait:' .. worker, holder)  -- a waiter that ends without running
redis.call('ZREM', P .. 'slot_wait_until:' .. worker, holder)
local starts = P .. 'slot_start:' .. worker
local start = tonumber(redis.call('HGET', starts, holder))
if not start then return 0 end
redis.call('HDEL', starts, holder)
local now = now_ms()
local busy = P .. 'busy:' .. worker
local first = math.max(start, now - keep * bucket)
local b = math.floor(first / bucket)
while b * bucket < now do
  local lo, hi = math.max(first, b * bucket), math.min(now, (b + 1) * bucket)
  if hi > lo then redis.call('HINCRBY', busy, b, hi - lo) end
  b = b + 1
end
if redis.call('HLEN', busy) > keep + 10 then
  local oldest = math.floor(now / bucket) - keep
  for _, field in ipairs(redis.call('HKEYS', busy)) do
    if tonumber(field) < oldest then redis.call('HDEL', busy, field) end
  end
end
return now - start
