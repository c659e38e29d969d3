-- Writes a job's final status and its fields, for the attempt holding the lease.
-- KEYS: job hash. ARGV: job_id, final status, retention_s, attempt-log line ('' for none),
-- webhook grace ms, delivery message template, lease owner, then field/value pairs.
-- Returns {1, delivery id or ''}; {0, 'final'} when the job was already final and {0, 'lease'}
-- when another attempt holds it (nothing changes either way).
local status = redis.call('HGET', KEYS[1], 'status')
if not status or TERMINAL[status] then return {0, 'final'} end
if not held_by(KEYS[1], ARGV[7]) then return {0, 'lease'} end
for i = 8, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[4] ~= '' then
  local log = redis.call('HGET', KEYS[1], 'attempt_log') or ''
  redis.call('HSET', KEYS[1], 'attempt_log', log .. ARGV[4] .. '\n')
end
local delivery = finalize(KEYS[1], ARGV[1], ARGV[2], now_ms(), tonumber(ARGV[3]),
                          tonumber(ARGV[5]), ARGV[6])
return {1, delivery}
