-- Reopens a failed job from the dead-letter set: back to `queued` with its attempts reset, its
-- deadline and cancel flag cleared, counted as open again, and back in its waiting set.
-- KEYS: job hash. ARGV: job_id, retention_s. Returns 1 when requeued.
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then
  redis.call('ZREM', K.DLQ, ARGV[1])
  return 0
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'finished_ms', '',
           'started_ms', '', 'next_attempt_ms', '', 'error_code', '', 'error_message', '',
           'expires_ms', '', 'cancel_requested', '')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZREM', K.DLQ, ARGV[1])
reopen(KEYS[1], ARGV[1], now)
wait_in(KEYS[1], ARGV[1], now, nil)
announce(ARGV[1], 'queued')
return 1
