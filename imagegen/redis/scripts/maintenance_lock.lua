-- Takes the sweeper's lock, or keeps it when it is the caller's.
-- KEYS: lock. ARGV: token, ttl ms. Returns 1 when held by the caller.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
