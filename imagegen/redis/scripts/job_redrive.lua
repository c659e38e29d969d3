-- Puts back in their waiting sets the jobs nobody holds (event redrive): a running job whose
-- lease ran out (its worker died, or its attempt lost Redis) and a released job no worker
-- claimed within the grace (its message went with a dead worker). A late message then finds it
-- waiting and is skipped. A job whose lease ran out with a Bedrock call in flight (`calling`)
-- lost that call's answer: the image is booked as spent (Bedrock bills what it generated), so
-- the spend counter never falls short of what was billed; `lost_calls|{model}` counts them.
-- KEYS: none. ARGV: 1 now, 2-6 the job context, 7 batch size, 8 grace ms.
-- Touches: imagegen:running, imagegen:dispatch:models, the jobs put back and their places
-- (imagegen:dispatch:{model}:*, imagegen:tenant:{t}:active|paused), imagegen:spend:{t}:{period},
-- imagegen:spend:{t}:days and imagegen:spend:tenants (a lost call booked), the cache entry's
-- :leader and :followers and the followers' records, imagegen:stats.
-- Returns the ids put back.
job_context(ARGV)
local limit, grace = tonumber(ARGV[ARG0]), tonumber(ARGV[ARG0 + 1])
local put_back = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.RUNNING, '-inf', NOW_MS, 'LIMIT', '0', limit)) do
  local job = load_job(id)
  if not job or job.place ~= 'running' then
    redis.call('ZREM', K.RUNNING, id)
  elseif number(job, 'lease_until_ms') > NOW_MS then
    redis.call('ZADD', K.RUNNING, number(job, 'lease_until_ms'), id)
  elseif transition(job, 'redrive') then
    redis.call('HINCRBY', K.STATS, 'redriven|lease', '1')
    table.insert(put_back, id)
  end
end
for _, model in ipairs(redis.call('SMEMBERS', K.DISPATCH_MODELS)) do
  local released = dispatch_base(model) .. ':released'
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', released, '-inf', NOW_MS - grace,
                                 'LIMIT', '0', limit)) do
    local job = load_job(id)
    if job and job.place == 'released' and transition(job, 'redrive') then
      redis.call('HINCRBY', K.STATS, 'redriven|released', '1')
      table.insert(put_back, id)
    else
      redis.call('ZREM', released, id)
    end
  end
end
return put_back
