-- Gives the lease back without using up an attempt (the quota had no room).
-- KEYS: job hash. ARGV: lease owner, delay ms, redrive grace ms. Returns 1, or 0 when the lease
-- is not the caller's.
if not held_by(KEYS[1], ARGV[1]) then return 0 end
local due = now_ms() + tonumber(ARGV[2])
redis.call('ZADD', K.RUNNING, due + tonumber(ARGV[3]), redis.call('HGET', KEYS[1], 'job_id'))
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_until_ms', 0,
           'next_attempt_ms', due)
return 1
