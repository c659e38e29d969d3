-- Records a job that arrived in a raw message and broke the rules: a `failed` record saying
-- why, written whole or not at all. Nothing happens when the job id already has a record.
-- KEYS: job hash. ARGV: job_id, retention_s, then field/value pairs. Returns 1 when recorded.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'status', 'failed', 'created_ms', now,
           'finished_ms', now, 'attempts', 0)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
announce(ARGV[1], 'failed')
return 1
