-- Queues a delivery message for each due outbox entry and moves the entry ahead by the grace,
-- so a message lost with a dead worker is sent again. An entry whose delivery record has
-- expired leaves the outbox: there is nothing left to send.
-- KEYS: due zset. ARGV: 1 now, 2 batch size, 3 grace ms, 4 message template.
-- Touches: the delivery records (read), the webhooks queue.
-- Returns the ids queued.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', NOW_MS, 'LIMIT', '0', tonumber(ARGV[2]))
local queued = {}
for _, id in ipairs(due) do
  if redis.call('EXISTS', K.WEBHOOK_PREFIX .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], NOW_MS + tonumber(ARGV[3]), id)
    redis.call('LPUSH', K.WEBHOOK_QUEUE, fill(ARGV[4], {[K.DELIVERY_ID] = id}))
    table.insert(queued, id)
  end
end
return queued
