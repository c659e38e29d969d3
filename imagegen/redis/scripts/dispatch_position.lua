-- Where a waiting job stands (estimate.lua): its position among every tenant's waiting jobs
-- of its model, when it should start, its tenant's share and, when its tenant's queue is
-- paused, why. Nothing is written. O(log n) in tenants and jobs.
-- KEYS: 1 the quota's bucket. ARGV: 1 now, 2 job id, 3 tenants' weights (JSON), 4 configured
--       rpm (0 = no limit), 5 burst, 6 floor rpm, 7 a tenant's rpm cap, 8 a tenant's
--       concurrency cap, 9 batch_every.
-- Reads: the job, the model's dispatcher keys, the tenant's record, bucket and active set.
-- Returns {position (0 = not waiting), start ms from now (-1: unbounded), share, rate rpm,
-- pause reason ('' = none)} as strings.
CTX.weights = cjson.decode(ARGV[3])
local h = redis.call('HMGET', job_key(ARGV[2]), 'place', 'model_id', 'tenant', 'priority')
if h[1] ~= 'waiting' then return {'0', '0', '0', '0', ''} end
local model, tenant = h[2], tenant_of(h[3])
local class = h[4] == 'batch' and 'batch' or 'interactive'
local rank = redis.call('ZRANK', wait_key(model, tenant, class), ARGV[2])
if not rank then return {'0', '0', '0', '0', ''} end
local k = jobs_ahead(model, tenant, class, rank, tonumber(ARGV[9]))
return estimate_start(model, tenant, k, {
  bucket = KEYS[1], rpm = tonumber(ARGV[4]), burst = tonumber(ARGV[5]), floor = tonumber(ARGV[6]),
  tenant_rpm = tonumber(ARGV[7]), tenant_cap = tonumber(ARGV[8])})
