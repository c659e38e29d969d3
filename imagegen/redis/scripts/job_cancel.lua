-- Cancels a job: one nobody holds (waiting, released but not claimed, or waiting for a retry)
-- ends `canceled` now and leaves the dispatcher; a running one gets the cancel flag (the worker
-- stops before its Bedrock call or its upload). A released job's message finds it final.
-- KEYS: job hash. ARGV: job_id, retention_s, webhook grace ms, delivery message template.
-- Returns canceled | requested | terminal | missing.
local h = redis.call('HMGET', KEYS[1], 'status', 'dispatch')
local status = h[1]
if not status then return 'missing' end
if TERMINAL[status] then return 'terminal' end
if status == 'queued' or h[2] == 'waiting' or h[2] == 'delayed' then
  finalize(KEYS[1], ARGV[1], 'canceled', now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]),
           ARGV[4])
  return 'canceled'
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 'requested'
