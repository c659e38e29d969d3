-- Sends again every started job that nobody holds and that nothing came for: its lease ended
-- (the worker died, or its attempt lost Redis and could not give the job back) or its retry is
-- overdue (the message went with a dead worker). A duplicate message is harmless: the claim
-- lets one attempt run. Final jobs leave the index.
-- KEYS: none. ARGV: batch size, redrive grace ms, the generate template for 'interactive',
-- the one for 'batch'. Returns the ids sent again.
local now = now_ms()
local grace = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', K.RUNNING, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local sent = {}
for _, id in ipairs(due) do
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'lease_until_ms', 'priority')
  if h[1] ~= 'running' then
    redis.call('ZREM', K.RUNNING, id)
  elseif (tonumber(h[2]) or 0) > now then
    redis.call('ZADD', K.RUNNING, tonumber(h[2]), id)
  else
    local queue, template = 'interactive', ARGV[3]
    if h[3] == 'batch' then queue, template = 'batch', ARGV[4] end
    local message = string.gsub(template, K.JOB_ID, id)
    message = string.gsub(message, K.NONCE, tostring(now))
    redis.call('LPUSH', queue, message)
    redis.call('ZADD', K.RUNNING, now + grace, id)
    redis.call('HINCRBY', K.STATS, 'redriven|' .. queue, 1)
    table.insert(sent, id)
  end
end
return sent
