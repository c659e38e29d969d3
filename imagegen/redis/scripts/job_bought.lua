-- Books an image Bedrock returned (and billed) for a job: its tenant's spend for the day and the
-- month (the reservation made at release becomes spend, in the periods it was reserved in), the
-- job's cost, and the fleet's image count.
-- KEYS: job hash. ARGV: model id, the model's price (micro-dollars), today (d:YYYY-MM-DD), this
-- month (m:YYYY-MM), ledger ttl s.
-- Returns the amount booked (micro-dollars).
local model = ARGV[1]
local h = redis.call('HMGET', KEYS[1], 'tenant', 'billed_micro')
local tenant = tenant_of(h[1])
local held, day, month = unreserve(KEYS[1])
local price = tonumber(ARGV[2])
if held > 0 then price = held else day, month = ARGV[3], ARGV[4] end
local ttl = tonumber(ARGV[5])
for _, period in ipairs({day, month}) do
  local ledger = spend_key(tenant, period)
  redis.call('HINCRBY', ledger, 'spent', price)
  redis.call('HINCRBY', ledger, 'spent|' .. model, price)
  redis.call('HINCRBY', ledger, 'images|' .. model, 1)
  redis.call('EXPIRE', ledger, ttl)
end
redis.call('SADD', K.SPEND_PREFIX .. tenant .. ':days', day)
redis.call('SADD', K.SPEND_TENANTS, tenant)
redis.call('HSET', KEYS[1], 'billed_micro', (tonumber(h[2] or '') or 0) + price)
redis.call('HINCRBY', K.STATS, 'images|' .. model, 1)
return price
