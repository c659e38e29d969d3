-- Takes the sweeper's lock, or keeps it when it is the caller's.
-- KEYS: lock. ARGV: 1 now (unused), 2 token, 3 ttl ms. Returns 1 when held by the caller.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
  return 1
end
return 0
