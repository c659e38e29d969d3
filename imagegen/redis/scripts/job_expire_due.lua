-- Ends every job whose deadline passed before it started as `expired`.
-- KEYS: deadlines zset. ARGV: batch size, retention_s, webhook grace ms, delivery template.
-- Returns the ids of the jobs ended.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local expired = {}
for _, id in ipairs(due) do
  local key = job_key(id)
  if redis.call('HGET', key, 'status') == 'queued' then
    finalize(key, id, 'expired', now, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
    table.insert(expired, id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return expired
