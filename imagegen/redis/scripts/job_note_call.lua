-- Adds one Bedrock call's attribution (a JSON line: pool, Region, request id, invocation
-- latency, outcome) to the job's `calls` field, while the caller holds its lease.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 lease owner, 9 the line.
-- Touches: only the job's record.
-- Returns 1, or 0 when the lease is not the caller's.
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not (job and job.place == 'running' and job.f.lease_owner == ARGV[ARG0 + 1]) then return 0 end
local calls = redis.call('HGET', job.key, 'calls') or ''
set_fields(job, {'calls', calls .. ARGV[ARG0 + 2] .. '\n'})
return 1
