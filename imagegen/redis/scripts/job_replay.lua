-- Reopens a failed job from the dead-letter set (event replay): queued again with its attempts
-- reset, its deadline and cancel flag cleared, counted as open again, back in its waiting set.
-- Only a dead letter: a job refused on arrival (never in the set) never ran, and stays refused.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id.
-- Touches: imagegen:dlq, imagegen:open, imagegen:tenant:{t}:open, imagegen:batch:{id},
-- imagegen:dispatch:{model}:* and imagegen:dispatch:models, the events channels.
-- Returns 1 when requeued.
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not job or job.status ~= 'failed' or not redis.call('ZSCORE', K.DLQ, job.id) then
  redis.call('ZREM', K.DLQ, ARGV[ARG0])
  return 0
end
if not transition(job, 'replay') then return 0 end
announce(job, 'queued')
return 1
