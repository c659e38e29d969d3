-- Gives the lease back after a retryable failure, so the retry message can claim the job.
-- KEYS: job hash. ARGV: lease owner, attempt-log line, retry delay ms, error code, error message,
-- redrive grace ms (the sweeper sends the job again when no retry came by its due time + this).
-- Returns 1, or 0 when the lease is not the caller's.
if not held_by(KEYS[1], ARGV[1]) then return 0 end
local due = now_ms() + tonumber(ARGV[3])
redis.call('ZADD', K.RUNNING, due + tonumber(ARGV[6]), redis.call('HGET', KEYS[1], 'job_id'))
local log = redis.call('HGET', KEYS[1], 'attempt_log') or ''
redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_until_ms', 0,
           'attempt_log', log .. ARGV[2] .. '\n',
           'next_attempt_ms', due,
           'error_code', ARGV[4], 'error_message', ARGV[5])
redis.call('HINCRBY', K.STATS, 'retries|' .. ARGV[4], 1)
return 1
