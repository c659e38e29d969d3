-- Takes one of a cap's slots (an endpoint's deliveries in flight); expired
-- leases (a dead worker's) are dropped first.
-- KEYS: inflight zset. ARGV: cap, lease_ms, slot id. Returns 1 when taken, 0 when all are held.
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]) * 2, 60000))
return 1
