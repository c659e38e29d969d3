-- A tenant's budgets or caps changed: its paused queues go back into every model's scan (the
-- next release checks them again and pauses them again if they still cannot be served).
-- KEYS: none. ARGV: 1 now, 2 tenant, 3 tenants' weights (JSON).
-- Touches: the tenant's paused index and, per model, the dispatcher's :paused, :tenants,
-- :weight and :state.
-- Returns how many queues were resumed.
CTX.weights = cjson.decode(ARGV[3])
local paused = redis.call('HKEYS', K.TENANT_PREFIX .. ARGV[2] .. ':paused')
for _, model in ipairs(paused) do resume(model, ARGV[2]) end
return #paused
