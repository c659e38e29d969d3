-- Cancels a job: one nobody holds (waiting, delayed, after, following, or released and not
-- claimed) ends canceled now (event cancel); a running one gets the cancel flag (event
-- request_cancel: the worker stops before its Bedrock call or its upload). A released job's
-- message then finds it final.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id.
-- Touches (a final transition):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models.
-- Returns canceled | requested | terminal | missing.
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not job then return 'missing' end
if job.place == 'final' then return 'terminal' end
if job.place == 'running' then
  transition(job, 'request_cancel')
  return 'requested'
end
transition(job, 'cancel', {status = 'canceled'})
return 'canceled'
