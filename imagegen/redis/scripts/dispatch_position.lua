-- Where a waiting job stands (or would stand, for one about to be submitted): its position
-- among every tenant's waiting jobs of its model, and when it should start at the current rate.
-- The backlog ahead of it is its own tenant's jobs that go first (interactive before batch;
-- earlier deadlines, then earlier submissions), plus, from every other tenant with jobs
-- waiting, what fair share releases meanwhile: at most that tenant's backlog, else as many jobs
-- as its weight buys while this tenant's are released. Nothing is written.
-- KEYS: 1 the quota's bucket. ARGV: 1 job id ('' = a job about to be submitted), 2 model id,
--       3 tenant ('' = none), 4 priority class, 5 tenant weights (JSON object), 6 configured
--       rpm (0 = no limit), 7 burst, 8 floor rpm, 9 jobs of the same kind submitted with it
--       ahead of it (for a new job).
-- Returns {position (1 = next; 0 = not waiting), start in ms from now (-1 = no limit), share
-- of the rate (0-1), rate rpm} as strings.
local model, tenant, class = ARGV[2], tenant_of(ARGV[3]), ARGV[4]
local weights = cjson.decode(ARGV[5])
local interactive, batch = wait_key(model, tenant, 'interactive'), wait_key(model, tenant, 'batch')
local ahead
if ARGV[1] ~= '' then
  local key = job_key(ARGV[1])
  local h = redis.call('HMGET', key, 'dispatch', 'priority')
  if h[1] ~= 'waiting' then return {'0', '0', '0', '0'} end
  class = h[2] or 'interactive'
  ahead = redis.call('ZRANK', wait_key(model, tenant, class), ARGV[1])
  if not ahead then return {'0', '0', '0', '0'} end
else
  ahead = redis.call('ZCARD', wait_key(model, tenant, class)) + tonumber(ARGV[9])
end
if class == 'batch' then ahead = ahead + redis.call('ZCARD', interactive) end

local function weight_of(t)
  local w = weights[t] or 1
  if t ~= K.NO_TENANT then
    w = tonumber(redis.call('HGET', K.TENANT_PREFIX .. t, 'weight') or '') or w
  end
  return math.max(w, 1e-6)
end

local own_weight = weight_of(tenant)
local total_weight = own_weight
local before = 0
local tenants = redis.call('ZRANGE', dispatch_base(model) .. ':tenants', 0, 999)
for _, t in ipairs(tenants) do
  if t ~= tenant then
    local backlog = redis.call('ZCARD', wait_key(model, t, 'interactive'))
                    + redis.call('ZCARD', wait_key(model, t, 'batch'))
    if backlog > 0 then
      local w = weight_of(t)
      total_weight = total_weight + w
      before = before + math.min(backlog, (ahead + 1) * w / own_weight)
    end
  end
end
local position = ahead + math.floor(before) + 1
local share = own_weight / total_weight
local configured = tonumber(ARGV[6])
if configured <= 0 then return {tostring(position), '-1', tostring(share), '0'} end
local tokens, rate = load_bucket(KEYS[1], configured, math.max(tonumber(ARGV[7]), 2),
                                 tonumber(ARGV[8]), clock(''))
local start_ms = math.max(0, position - tokens) * 60000 / rate
return {tostring(position), tostring(start_ms), tostring(share), tostring(rate)}
