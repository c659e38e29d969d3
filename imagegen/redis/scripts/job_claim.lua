-- Claims a job for one attempt: a lease owned by the caller, so a redelivered message finds the
-- job final (skipped), leased by a live attempt (skipped), or free to run again.
-- KEYS: job hash. ARGV: job_id, lease owner, lease_ms, retention_s, webhook grace ms, delivery
-- message template.
-- Returns {state, attempts}: claimed | missing | terminal | busy | canceled | expired (a
-- deadline passed before the job started).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0} end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if TERMINAL[status] then return {'terminal', attempts} end
local now = now_ms()
local retention, grace = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  finalize(KEYS[1], ARGV[1], 'canceled', now, retention, grace, ARGV[6])
  return {'canceled', attempts}
end
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_ms') or '')
if status == 'queued' and expires and now >= expires then
  finalize(KEYS[1], ARGV[1], 'expired', now, retention, grace, ARGV[6])
  return {'expired', attempts}
end
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
if status == 'running' and lease_until > now then return {'busy', attempts} end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[2],
           'lease_until_ms', now + tonumber(ARGV[3]), 'next_attempt_ms', '')
redis.call('HSETNX', KEYS[1], 'started_ms', now)
redis.call('ZADD', K.RUNNING, now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], retention)
if status ~= 'running' then
  unqueue(KEYS[1], ARGV[1])
  announce(ARGV[1], 'running')
  add_delivery(KEYS[1], ARGV[1], 'job.started', now, grace, retention, ARGV[6])
end
return {'claimed', attempts}
