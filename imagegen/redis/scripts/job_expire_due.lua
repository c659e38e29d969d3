-- Ends every job whose deadline passed before it ever started (event expire).
-- KEYS: deadlines zset. ARGV: 1 now, 2-6 the job context, 7 batch size.
-- Touches (final transitions):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models.
-- Returns the ids of the jobs ended.
job_context(ARGV)
local expired = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', NOW_MS,
                               'LIMIT', '0', tonumber(ARGV[ARG0]))) do
  local job = load_job(id)
  if job and not job.f.started_ms and LIFECYCLE.expire.from[job.place]
     and transition(job, 'expire', {status = 'expired'}) then
    table.insert(expired, id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return expired
