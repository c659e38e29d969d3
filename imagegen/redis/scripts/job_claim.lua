-- Claims a released job for one attempt: a lease owned by the caller (event claim), so a
-- redelivered message finds the job final, leased by a live attempt, or back in the
-- dispatcher (only the message of its next release may run it), and is skipped.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 lease owner, 9 lease ms.
-- Touches: imagegen:running, imagegen:deadlines, imagegen:dispatch:{model}:released|active,
-- imagegen:tenant:{t}:active, the events channels, imagegen:webhook:{delivery},
-- imagegen:webhooks:due, the webhooks queue; on a cancel or an expiry (a final transition):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models.
-- Returns {state, attempts, ms since the job was created (its first claim), else -1}, and
-- when claimed the record's field/value pairs after them: claimed | missing | terminal | busy
-- | waiting | canceled | expired (a deadline passed before the job ever started).
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not job then return {'missing', 0, -1} end
local attempts = number(job, 'attempts')
if job.place == 'final' then return {'terminal', attempts, -1} end
if job.place == 'running' and number(job, 'lease_until_ms') > NOW_MS then
  return {'busy', attempts, -1}
end
if job.place ~= 'released' then return {'waiting', attempts, -1} end
if job.f.cancel_requested == '1' then
  transition(job, 'cancel', {status = 'canceled'})
  return {'canceled', attempts, -1}
end
local expires = tonumber(job.f.expires_ms or '')
if expires and not job.f.started_ms and NOW_MS >= expires then
  transition(job, 'expire', {status = 'expired'})
  return {'expired', attempts, -1}
end
local opts = {owner = ARGV[ARG0 + 1], lease_until = NOW_MS + tonumber(ARGV[ARG0 + 2])}
transition(job, 'claim', opts)
local answer = {'claimed', opts.attempts, opts.waited or -1}
for _, value in ipairs(redis.call('HGETALL', job.key)) do table.insert(answer, value) end
return answer
