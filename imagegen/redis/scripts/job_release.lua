-- Gives the lease back after a retryable failure, so the retry message can claim the job.
-- KEYS: job hash. ARGV: lease owner, attempt-log line, retry delay ms, error code, error message.
-- Returns 1, or 0 when the lease is not the caller's.
if not held_by(KEYS[1], ARGV[1]) then return 0 end
local log = redis.call('HGET', KEYS[1], 'attempt_log') or ''
redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_until_ms', 0,
           'attempt_log', log .. ARGV[2] .. '\n',
           'next_attempt_ms', now_ms() + tonumber(ARGV[3]),
           'error_code', ARGV[4], 'error_message', ARGV[5])
redis.call('HINCRBY', K.STATS, 'retries|' .. ARGV[4], 1)
return 1
