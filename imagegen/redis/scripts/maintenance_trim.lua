-- Forgets what is older than the retention in the sets that would otherwise grow for ever: the
-- job and webhook dead-letter sets and the disabled endpoints (their records expire with it).
-- ARGV: retention_s. Returns {jobs, deliveries, endpoints} removed.
local oldest = now_ms() - 1000 * tonumber(ARGV[1])
return {redis.call('ZREMRANGEBYSCORE', K.DLQ, '-inf', oldest),
        redis.call('ZREMRANGEBYSCORE', K.WEBHOOKS_DLQ, '-inf', oldest),
        redis.call('ZREMRANGEBYSCORE', K.WEBHOOKS_DISABLED, '-inf', oldest)}
