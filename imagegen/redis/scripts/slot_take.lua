-- Takes one of a cap's slots (an endpoint's deliveries in flight); expired
-- leases (a dead worker's) are dropped first.
-- KEYS: inflight zset. ARGV: 1 now, 2 cap, 3 lease_ms, 4 slot id. Returns 1 when taken, 0 when
-- all are held.
if take_endpoint_slot(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]) then return 1 end
return 0
