-- Takes a webhook delivery for one attempt: a lease, so it is never sent twice at once. A claimed
-- delivery comes with what sending it needs, in the same round trip: its fields, its job's
-- record and the signing secrets of the job's tenant.
-- KEYS: delivery hash. ARGV: 1 now, 2 delivery id, 3 lease ms.
-- Touches: the outbox (K.WEBHOOKS_DUE) and the disabled endpoints; reads the job's record and
-- its tenant's signing secrets (imagegen:tenant:{t}:secrets, or imagegen:webhooks:secrets).
-- Returns {state, attempts}: claimed | missing | final | busy | disabled; when claimed, then
-- job_id, event, url, webhook_id, the secrets (JSON, '' = none yet) and the job record's
-- field/value pairs (none when it expired).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', 0} end
if state ~= 'pending' and state ~= 'sending' then return {'final', 0} end
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
if state == 'sending' and lease_until > NOW_MS then return {'busy', 0} end
local h = redis.call('HMGET', KEYS[1], 'url', 'job_id', 'event', 'webhook_id')
if redis.call('ZSCORE', K.WEBHOOKS_DISABLED, h[1]) then
  redis.call('HSET', KEYS[1], 'state', 'disabled')
  redis.call('ZREM', K.WEBHOOKS_DUE, ARGV[2])
  return {'disabled', 0}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', '1')
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_until_ms', NOW_MS + tonumber(ARGV[3]))
redis.call('ZADD', K.WEBHOOKS_DUE, NOW_MS + tonumber(ARGV[3]), ARGV[2])
local job = job_key(h[2])
local tenant = redis.call('HGET', job, 'tenant')
local secrets_key = K.WEBHOOK_SECRETS
if tenant and tenant ~= '' then secrets_key = K.TENANT_PREFIX .. tenant .. ':secrets' end
local answer = {'claimed', attempts, h[2], h[3], h[1], h[4], redis.call('GET', secrets_key) or ''}
for _, value in ipairs(redis.call('HGETALL', job)) do table.insert(answer, value) end
return answer
