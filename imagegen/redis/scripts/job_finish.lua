-- Writes a job's final status and its fields, for the attempt holding the lease (event
-- finish). The image this attempt bought, if it did, is booked here: its reservation becomes
-- spend (a worker that dies before this has its call booked by the redrive: `calling`).
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 final status, 9 attempt-log
-- line ('' for none), 10 lease owner, 11 '1' when this attempt bought an image, 12 '1' when the
-- caller delivers the job's own webhooks at once (no delivery message is queued for them: the
-- outbox sends them after the grace if the caller does not), then field/value pairs.
-- Touches (a final transition):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models.
-- Returns {1, the job's new delivery ids, comma-separated}; {0, 'final'} when the job was
-- already final and {0, 'lease'} when another attempt holds it (nothing changes either way).
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not job or job.place == 'final' then return {0, 'final'} end
if job.place ~= 'running' or job.f.lease_owner ~= ARGV[ARG0 + 3] then return {0, 'lease'} end
local fields = {}
for i = ARG0 + 6, #ARGV do table.insert(fields, ARGV[i]) end
if ARGV[ARG0 + 5] == '1' then CTX.inline_job, CTX.inline_ids = job.id, {} end
if #fields > 0 then set_fields(job, fields) end
if ARGV[ARG0 + 2] ~= '' then
  local log = redis.call('HGET', job.key, 'attempt_log') or ''
  redis.call('HSET', job.key, 'attempt_log', log .. ARGV[ARG0 + 2] .. '\n')
end
local status = ARGV[ARG0 + 1]
transition(job, 'finish', {status = status, bought = ARGV[ARG0 + 4] == '1'})
return {1, table.concat(CTX.inline_ids or {}, ',')}
