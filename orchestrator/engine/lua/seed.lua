-- Rebuild the quota counters from the database's ledger once after Redis lost them (a
-- restart without persistence): the ledger is the record of what was spent, Redis only of
-- what is held now. ARGV = prefix, day, month, then per resource: name, used today, used this
-- month (ledger sums). A counter already ahead of the ledger (settled since the restart) is
-- kept. Returns 1 when it seeded, 0 when the counters were already there.
if redis.call('HEXISTS', Q, SEEDED) == 1 then return 0 end
local day, month = tonumber(ARGV[2]), tonumber(ARGV[3])
local names = {}
for i = 4, #ARGV, 3 do names[#names + 1] = ARGV[i] end
local st = load(names)
for i = 4, #ARGV, 3 do
  local s, du, mu = st[ARGV[i]], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if s.d == day then s.du = math.max(s.du, du) elseif day > s.d then s.d, s.du = day, du end
  if s.m == month then s.mu = math.max(s.mu, mu) elseif month > s.m then s.m, s.mu = month, mu end
end
save(st, {SEEDED, '1'})
return 1
