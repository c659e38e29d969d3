-- Claims a released job for one attempt: a lease owned by the caller, so a redelivered message
-- finds the job final (skipped), leased by a live attempt (skipped), back in the dispatcher
-- (skipped: only the message of its next release may run it), or free to run.
-- KEYS: job hash. ARGV: job_id, lease owner, lease_ms, retention_s, webhook grace ms, delivery
-- message template.
-- Returns {state, attempts, ms since the job was created (its first claim), else -1}:
-- claimed | missing | terminal | busy | waiting | canceled | expired (a deadline passed before
-- the job started).
local h = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'cancel_requested', 'expires_ms',
                     'lease_until_ms', 'dispatch', 'model_id', 'created_ms')
local status = h[1]
if not status then return {'missing', 0, -1} end
local attempts = tonumber(h[2] or '0')
if TERMINAL[status] then return {'terminal', attempts, -1} end
local now = now_ms()
local retention, grace = tonumber(ARGV[4]), tonumber(ARGV[5])
if h[3] == '1' then
  finalize(KEYS[1], ARGV[1], 'canceled', now, retention, grace, ARGV[6])
  return {'canceled', attempts, -1}
end
local expires = tonumber(h[4] or '')
if status == 'queued' and expires and now >= expires then
  finalize(KEYS[1], ARGV[1], 'expired', now, retention, grace, ARGV[6])
  return {'expired', attempts, -1}
end
if status == 'running' and (tonumber(h[5] or '0') or 0) > now then
  return {'busy', attempts, -1}
end
-- A record without a dispatch state predates the dispatcher: its message is its release.
if h[6] and h[6] ~= '' and h[6] ~= 'released' then return {'waiting', attempts, -1} end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[2],
           'lease_until_ms', now + tonumber(ARGV[3]), 'next_attempt_ms', '', 'dispatch', 'claimed')
redis.call('ZREM', dispatch_base(h[7] or '') .. ':released', ARGV[1])
redis.call('ZADD', K.RUNNING, now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], retention)
local waited = -1
if status ~= 'running' then
  redis.call('HSETNX', KEYS[1], 'started_ms', now)
  waited = now - (tonumber(h[8] or '') or now)
  announce(ARGV[1], 'running')
  add_delivery(KEYS[1], ARGV[1], 'job.started', now, grace, retention, ARGV[6])
end
return {'claimed', attempts, waited}
