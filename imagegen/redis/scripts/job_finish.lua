-- Writes a job's final status and its fields, for the attempt holding the lease (event
-- finish). The image this attempt bought, if it did, is booked here: its reservation becomes
-- spend (a worker that dies before this has its call booked by the redrive: `calling`).
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 final status, 9 attempt-log
-- line ('' for none), 10 lease owner, 11 '1' when this attempt bought an image, 12 how many of
-- the job's new deliveries the caller sends at once (0: none; they are claimed here for their
-- first attempt, with no delivery message: the outbox sends them when their lease ends if the
-- caller does not), 13 their lease ms, 14 this attempt's Bedrock call attribution (a JSON line
-- added to the `calls` field, as job_note_call.lua does; '' for none), 15 the in-flight set of
-- the job's webhook endpoint ('' for none), 16 its cap, 17 the slot id the first delivery claimed
-- here takes in it (slot_take.lua), 18 '1' when a cancel requested meanwhile wins over a
-- `succeeded` (the image this attempt stored), then field/value pairs.
-- Touches (a final transition):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:endpoint:{endpoint}:inflight (the slot),
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models; for the
--   deliveries claimed here, imagegen:webhooks:disabled-urls and the signing secrets (read).
-- Returns {1, n claimed deliveries, then for each: its id, event, url, webhook-id and the slot it
-- took ('' none); when n > 0,
-- then the signing secrets of the job's tenant (JSON, '' = none; imagegen:tenant:{t}:secrets or
-- imagegen:webhooks:secrets)}; {0, 'final'} when the job was already final, {0, 'lease'}
-- when another attempt holds it and {0, 'cancel'} when a cancel won (ARGV 18; the caller then
-- finishes it canceled): nothing changes in any of these. The caller reads the record the
-- deliveries carry with an HGETALL sent beside this call (JobStore.finish).
job_context(ARGV)
local job = load_job(ARGV[ARG0])
if not job or job.place == 'final' then return {0, 'final'} end
if job.place ~= 'running' or job.f.lease_owner ~= ARGV[ARG0 + 3] then return {0, 'lease'} end
if ARGV[ARG0 + 11] == '1' and ARGV[ARG0 + 1] == 'succeeded' and job.f.cancel_requested == '1' then
  return {0, 'cancel'}
end
local fields = {}
for i = ARG0 + 12, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[ARG0 + 7] ~= '' then
  local calls = redis.call('HGET', job.key, 'calls') or ''
  fields[#fields + 1] = 'calls'
  fields[#fields + 1] = calls .. ARGV[ARG0 + 7] .. '\n'
end
local most = tonumber(ARGV[ARG0 + 5]) or 0
if most > 0 then
  CTX.inline_job, CTX.inline_ids = job.id, {}
  CTX.inline_most, CTX.inline_lease = most, tonumber(ARGV[ARG0 + 6])
  if ARGV[ARG0 + 8] ~= '' then
    CTX.inline_slot = {key = ARGV[ARG0 + 8], cap = tonumber(ARGV[ARG0 + 9]), id = ARGV[ARG0 + 10]}
  end
end
-- The fields, the log and the transition's writes in one HSET.
job.pending = {}
if #fields > 0 then set_fields(job, fields) end
if ARGV[ARG0 + 2] ~= '' then
  set_fields(job, {'attempt_log', attempt_log_with(job, ARGV[ARG0 + 2])})
end
local status = ARGV[ARG0 + 1]
transition(job, 'finish', {status = status, bought = ARGV[ARG0 + 4] == '1'})
flush_fields(job)
local claimed = CTX.inline_ids or {}
local answer = {1, #claimed}
for _, delivery in ipairs(claimed) do
  for _, value in ipairs(delivery) do answer[#answer + 1] = value end
end
if #claimed > 0 then
  local secrets_key = K.WEBHOOK_SECRETS
  if job.tenant ~= K.NO_TENANT then secrets_key = K.TENANT_PREFIX .. job.tenant .. ':secrets' end
  answer[#answer + 1] = redis.call('GET', secrets_key) or ''
end
return answer
