-- Gives the lease back after a retryable failure: the job waits in the model's delayed set
-- until the retry is due, then in its waiting set for its turn, like any other job.
-- KEYS: job hash. ARGV: lease owner, attempt-log line, retry delay ms, error code, error message.
-- Returns 1, or 0 when the lease is not the caller's.
if not held_by(KEYS[1], ARGV[1]) then return 0 end
local now = now_ms()
local due = now + tonumber(ARGV[3])
local job_id = redis.call('HGET', KEYS[1], 'job_id')
redis.call('ZREM', K.RUNNING, job_id)
local log = redis.call('HGET', KEYS[1], 'attempt_log') or ''
redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_until_ms', 0, 'calling', '',
           'attempt_log', log .. ARGV[2] .. '\n',
           'next_attempt_ms', due,
           'error_code', ARGV[4], 'error_message', ARGV[5])
wait_in(KEYS[1], job_id, now, due)
redis.call('HINCRBY', K.STATS, 'retries|' .. ARGV[4], 1)
return 1
