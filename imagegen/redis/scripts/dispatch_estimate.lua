-- When jobs about to be submitted would start (estimate.lua), each counting only what goes
-- before it: its tenant's waiting jobs with an earlier deadline (all of them, for a job without
-- one), interactive jobs before batch, and those of the same submission ahead of it. Nothing
-- is written.
-- KEYS: 1 the quota's bucket. ARGV: 1 now, 2 model id, 3 tenant ('' = none), 4 class, 5 tenants'
--       weights (JSON), 6 configured rpm, 7 burst, 8 floor rpm, 9 a tenant's rpm cap, 10 a
--       tenant's concurrency cap, 11 batch_every, then per job: its deadline ms ('' = none) and
--       how many jobs of the same submission go before it.
-- Reads: the model's dispatcher keys, the tenant's record, bucket and active set.
-- Returns per job {position, start ms from now (-1: unbounded), share, rate rpm, pause reason}.
CTX.weights = cjson.decode(ARGV[5])
local model, tenant, class = ARGV[2], tenant_of(ARGV[3]), ARGV[4]
local waiting = wait_key(model, tenant, class)
local limits = {bucket = KEYS[1], rpm = tonumber(ARGV[6]), burst = tonumber(ARGV[7]),
                floor = tonumber(ARGV[8]), tenant_rpm = tonumber(ARGV[9]),
                tenant_cap = tonumber(ARGV[10])}
local out = {}
for i = 12, #ARGV, 2 do
  local deadline = ARGV[i]
  local rank
  if deadline == '' then
    rank = redis.call('ZCARD', waiting)
  else
    rank = redis.call('ZCOUNT', waiting, '-inf', deadline)
  end
  local k = jobs_ahead(model, tenant, class, rank + tonumber(ARGV[i + 1]), tonumber(ARGV[11]))
  table.insert(out, estimate_start(model, tenant, k, limits))
end
return out
