-- Gives the lease back after a retryable failure (event retry): the job waits in the model's
-- delayed set until the retry is due, then in its waiting set for its turn, like any other. An
-- image the attempt bought (its upload failed; it is parked) is booked.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 lease owner, 9 attempt-log
-- line, 10 retry delay ms, 11 error code, 12 error message, 13 '1' when the attempt bought an
-- image, 14 '1' when the attempt is not counted (a pool throttled or refused it), 15 the pool
-- its next release should avoid ('' none).
-- Touches: imagegen:running, imagegen:stats, imagegen:spend:{t}:{period} and :days and
-- imagegen:spend:tenants (an image bought), imagegen:dispatch:{model}:delayed|active and
-- imagegen:dispatch:models, imagegen:tenant:{t}:active|paused (a slot freed resumes queues
-- paused for it: imagegen:dispatch:{model}:paused|tenants|weight|state), the cache entry's
-- :leader and :followers and the followers' records and waiting sets.
-- Returns 1, or 0 when the lease is not the caller's.
job_context(ARGV)
local job = load_job(ARGV[ARG0])
local held = job and job.place == 'running' and job.f.lease_owner == ARGV[ARG0 + 1]
if not held then return 0 end
if ARGV[ARG0 + 7] == '1' and (tonumber(redis.call('HGET', job.key, 'attempts') or '') or 0) > 0 then
  redis.call('HINCRBY', job.key, 'attempts', '-1')
end
set_fields(job, {'avoid_pool', ARGV[ARG0 + 8] or ''})
transition(job, 'retry', {due = NOW_MS + tonumber(ARGV[ARG0 + 3]), log_line = ARGV[ARG0 + 2],
                          error_code = ARGV[ARG0 + 4], error_message = ARGV[ARG0 + 5],
                          bought = ARGV[ARG0 + 6] == '1'})
return 1
