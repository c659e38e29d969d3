-- Forgets what is older than the retention in the sets that would otherwise grow for ever: the
-- job and webhook dead-letter sets, the disabled endpoints (their records expire with them) and
-- the tenants listed for spend reports whose ledgers have expired (a ledger is kept the spend
-- retention after its month ends: a tenant stays listed a month longer than that after its last
-- booking).
-- KEYS: none. ARGV: 1 now, 2 retention_s, 3 ledger ttl s.
-- Touches: K.DLQ, K.WEBHOOKS_DLQ, K.WEBHOOKS_DISABLED, K.SPEND_TENANTS.
-- Returns {jobs, deliveries, endpoints, tenants} removed.
local oldest = NOW_MS - 1000 * tonumber(ARGV[2])
local MONTH_MS = 31 * DAY_MS
return {redis.call('ZREMRANGEBYSCORE', K.DLQ, '-inf', oldest),
        redis.call('ZREMRANGEBYSCORE', K.WEBHOOKS_DLQ, '-inf', oldest),
        redis.call('ZREMRANGEBYSCORE', K.WEBHOOKS_DISABLED, '-inf', oldest),
        redis.call('ZREMRANGEBYSCORE', K.SPEND_TENANTS, '-inf',
                   NOW_MS - 1000 * tonumber(ARGV[3]) - MONTH_MS)}
