-- Cancels a job: a queued one ends `canceled` now; a running one gets the cancel flag (the
-- worker stops before its Bedrock call or its upload).
-- KEYS: job hash. ARGV: job_id, retention_s, webhook grace ms, delivery message template.
-- Returns canceled | requested | terminal | missing.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if TERMINAL[status] then return 'terminal' end
if status == 'queued' then
  finalize(KEYS[1], ARGV[1], 'canceled', now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]),
           ARGV[4])
  return 'canceled'
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 'requested'
