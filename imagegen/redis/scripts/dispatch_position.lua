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
local job = load_job(ARGV[2])
if not job or job.place ~= 'waiting' then return {'0', '0', '0', '0', ''} end
local rank = redis.call('ZRANK', wait_key(job.model, job.tenant, job.class), job.id)
if not rank then return {'0', '0', '0', '0', ''} end
local k = jobs_ahead(job.model, job.tenant, job.class, rank, tonumber(ARGV[9]))
return estimate_start(job.model, job.tenant, k, {
  bucket = KEYS[1], rpm = tonumber(ARGV[4]), burst = tonumber(ARGV[5]), floor = tonumber(ARGV[6]),
  tenant_rpm = tonumber(ARGV[7]), tenant_cap = tonumber(ARGV[8])})
