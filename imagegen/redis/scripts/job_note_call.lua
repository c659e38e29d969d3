-- Adds one Bedrock call's attribution (a JSON line: pool, Region, request id, invocation
-- latency, outcome) to the job's `calls` field: by the lease holder while it runs, or once its
-- attempt ended (the attempt's answer is noted after its image is kept) while no later attempt
-- started.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 lease owner, 9 the attempt,
-- 10 the line.
-- Touches: only the job's record.
-- Returns 1, or 0 when another attempt holds the job or it is gone.
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not job then return 0 end
if job.place == 'running' then
  if job.f.lease_owner ~= ARGV[ARG0 + 1] then return 0 end
elseif redis.call('HGET', job.key, 'attempts') ~= ARGV[ARG0 + 2] then
  return 0
end
local calls = redis.call('HGET', job.key, 'calls') or ''
set_fields(job, {'calls', calls .. ARGV[ARG0 + 3] .. '\n'})
return 1
