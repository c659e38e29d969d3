-- Puts back in its waiting set every job nobody holds: a running job whose lease ran out (its
-- worker died, or its attempt lost Redis and could not give the job back) and a released job
-- that no worker claimed within the grace (its message went with a dead worker). It then waits
-- its turn again; a late message finds it waiting and is skipped. Final jobs leave the sets.
-- A job whose lease ran out with a Bedrock call in flight (`calling`) lost that call's answer:
-- the image is booked as spent (Bedrock bills what it generated), so the spend counter never
-- falls short of what was billed; `lost_calls|{model}` counts them.
-- KEYS: none. ARGV: batch size, grace ms, today (d:YYYY-MM-DD), this month (m:YYYY-MM), ledger
-- ttl s. Returns the ids put back.
local now = now_ms()
local limit, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local put_back = {}
local due = redis.call('ZRANGEBYSCORE', K.RUNNING, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'lease_until_ms')
  if h[1] ~= 'running' then
    redis.call('ZREM', K.RUNNING, id)
  elseif (tonumber(h[2]) or 0) > now then
    redis.call('ZADD', K.RUNNING, tonumber(h[2]), id)
  else
    redis.call('ZREM', K.RUNNING, id)
    redis.call('HSET', key, 'lease_owner', '', 'lease_until_ms', 0)
    local call = redis.call('HMGET', key, 'calling', 'model_id', 'price_micro')
    if call[1] and call[1] ~= '' then
      book_image(key, call[2] or '?', tonumber(call[3] or '') or 0, ARGV[3], ARGV[4],
                 tonumber(ARGV[5]))
      redis.call('HINCRBY', K.STATS, 'lost_calls|' .. (call[2] or '?'), 1)
    end
    wait_in(key, id, now, nil)
    redis.call('HINCRBY', K.STATS, 'redriven|lease', 1)
    table.insert(put_back, id)
  end
end
for _, model in ipairs(redis.call('SMEMBERS', K.DISPATCH_MODELS)) do
  local released = dispatch_base(model) .. ':released'
  local stale = redis.call('ZRANGEBYSCORE', released, '-inf', now - grace, 'LIMIT', 0, limit)
  for _, id in ipairs(stale) do
    local key = job_key(id)
    local h = redis.call('HMGET', key, 'status', 'dispatch')
    if h[1] and not TERMINAL[h[1]] and h[2] == 'released' then
      wait_in(key, id, now, nil)
      redis.call('HINCRBY', K.STATS, 'redriven|released', 1)
      table.insert(put_back, id)
    else
      redis.call('ZREM', released, id)
    end
  end
end
return put_back
