-- Takes one of a cap's slots (an endpoint's deliveries in flight); expired
-- leases (a dead worker's) are dropped first.
-- KEYS: inflight zset. ARGV: 1 now, 2 cap, 3 lease_ms, 4 slot id. Returns 1 when taken, 0 when
-- all are held.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', NOW_MS)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], NOW_MS + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[3]) * 2, 60000))
return 1
