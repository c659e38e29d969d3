-- Claims a released job for one attempt: a lease owned by the caller (event claim), so a
-- redelivered message finds the job final, leased by a live attempt, or back in the
-- dispatcher (only the message of its next release may run it), and is skipped.
-- With ARGV[10] = '1' the caller calls Bedrock straight after the claim: a first attempt with
-- nothing to fetch or adopt first (no input image, not a cache copy) whose price is reserved
-- is marked calling in the same step (as job_calling.lua would be, one round trip less).
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 lease owner, 9 lease ms,
-- 10 '1' to mark the call.
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
-- Returns {state, attempts, ms since the job was created (its first claim), else -1, 1 when
-- the call is marked else 0}: claimed | missing | terminal | busy | waiting | canceled |
-- expired (a deadline passed before the job ever started). The caller reads the record as the
-- claim left it with an HGETALL sent beside this call (JobStore.claim): a reply built here
-- costs Redis about three times as much.
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not job then return {'missing', 0, -1, 0} end
-- The attempts so far, for an answer that claims nothing (a claim counts its own).
local function attempts() return tonumber(redis.call('HGET', job.key, 'attempts') or '') or 0 end
if job.place == 'final' then return {'terminal', attempts(), -1, 0} end
if job.place == 'running' and number(job, 'lease_until_ms') > NOW_MS then
  return {'busy', attempts(), -1, 0}
end
if job.place ~= 'released' then return {'waiting', attempts(), -1, 0} end
if job.f.cancel_requested == '1' then
  transition(job, 'cancel', {status = 'canceled'})
  return {'canceled', attempts(), -1, 0}
end
local expires = tonumber(job.f.expires_ms or '')
if expires and not job.f.started_ms and NOW_MS >= expires then
  transition(job, 'expire', {status = 'expired'})
  return {'expired', attempts(), -1, 0}
end
local opts = {owner = ARGV[ARG0 + 1], lease_until = NOW_MS + tonumber(ARGV[ARG0 + 2])}
local call_now = ARGV[ARG0 + 3] == '1' and job.f.no_inputs == '1' and not job.f.copy_from_key
                 and number(job, 'reserved_micro') > 0
-- The claim's writes and the mark in one HSET.
job.pending = {}
transition(job, 'claim', opts)
local marked = 0
if call_now and opts.attempts == 1 then
  set_fields(job, {'calling', NOW_MS})
  marked = 1
end
flush_fields(job)
return {'claimed', opts.attempts, opts.waited or -1, marked}
