-- Records one delivery attempt and what follows from it, and gives back the endpoint's slot the
-- attempt held (if any).
-- KEYS: 1 delivery hash, 2 the endpoint's in-flight set (or an unused key). ARGV: 1 now, 2
-- delivery id, 3 outcome (delivered | retry | exhausted | refused | disabled), 4 attempt-log
-- line, 5 retry delay ms, 6 the slot held ('' = none).
-- Touches: the outbox, the webhook dead-letter set, the disabled endpoints, stats.
-- Returns 1.
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[2], ARGV[6]) end
local log = redis.call('HGET', KEYS[1], 'log') or ''
local fields = {'log', log .. ARGV[4] .. '\n', 'lease_until_ms', 0}
local outcome = ARGV[3]
redis.call('HINCRBY', K.STATS, 'webhooks|' .. outcome, '1')
if outcome == 'retry' then
  local due = NOW_MS + tonumber(ARGV[5])
  table.insert(fields, 'state'); table.insert(fields, 'pending')
  table.insert(fields, 'next_ms'); table.insert(fields, due)
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('ZADD', K.WEBHOOKS_DUE, due, ARGV[2])
  return 1
end
redis.call('ZREM', K.WEBHOOKS_DUE, ARGV[2])
table.insert(fields, 'state'); table.insert(fields, outcome)
if outcome == 'delivered' then
  table.insert(fields, 'delivered_ms'); table.insert(fields, NOW_DIGITS)
end
redis.call('HSET', KEYS[1], unpack(fields))
if outcome == 'disabled' then
  redis.call('ZADD', K.WEBHOOKS_DISABLED, NOW_MS, redis.call('HGET', KEYS[1], 'url'))
elseif outcome ~= 'delivered' then
  redis.call('ZADD', K.WEBHOOKS_DLQ, NOW_MS, ARGV[2])
end
return 1
