-- Hold a resource for every process until now + ms (a provider answered 429 with
-- Retry-After); never shortens a longer hold. ARGV = prefix, resource, ms. Returns the
-- milliseconds the hold has left (ms 0 only reads it).
local res, ms = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local st = load({res})
local deadline = math.max(st[res].cool, now + ms)
if ms > 0 then
  st[res].cool = deadline
  save(st)
end
return deadline - now
