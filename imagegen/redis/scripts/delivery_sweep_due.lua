-- Queues a delivery message for each due outbox entry and moves the entry ahead by the grace,
-- so a message lost with a dead worker is sent again. An entry whose delivery record has
-- expired leaves the outbox: there is nothing left to send.
-- KEYS: due zset. ARGV: batch size, grace ms, message template. Returns the ids queued.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local queued = {}
for _, id in ipairs(due) do
  if redis.call('EXISTS', K.WEBHOOK_PREFIX .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    local message = string.gsub(ARGV[3], K.DELIVERY_ID, id)
    redis.call('LPUSH', K.WEBHOOK_QUEUE, message)
    table.insert(queued, id)
  end
end
return queued
