-- Job records: loading the fields a transition reads, the status messages.
local function job_key(job_id) return K.JOB_PREFIX .. job_id end

local JOB_FIELDS = {'status', 'place', 'model_id', 'tenant', 'priority', 'expires_ms', 'seq',
                    'created_ms', 'started_ms', 'cache_entry', 'cache_copy', 'copy_from_key',
                    'after_job', 'reserved_micro', 'reserved_day', 'reserved_month',
                    'billed_micro', 'calling', 'lease_owner', 'lease_until_ms',
                    'cancel_requested', 'price_micro', 'batch_id', 'open', 'claimed_ms',
                    'recall', 'dispatch', 'avoid_pool'}

-- Records written before places existed name the dispatcher's state instead.
local OLD_DISPATCH = {waiting = 'waiting', delayed = 'delayed', released = 'released',
                      claimed = 'running', following = 'following', after = 'after'}

local function tenant_of(value)
  if value and value ~= '' then return value end
  return K.NO_TENANT
end

-- The job as a table (nil when it has no record): id, key, tenant (K.NO_TENANT for none),
-- model, class, place, status and the raw fields `f`.
local function load_job(job_id)
  local key = job_key(job_id)
  local values = redis.call('HMGET', key, unpack(JOB_FIELDS))
  if not values[1] then return nil end
  local f = {}
  for i, name in ipairs(JOB_FIELDS) do
    if values[i] and values[i] ~= '' then f[name] = values[i] end
  end
  local place = f.place
  if not place then
    if TERMINAL[f.status] then place = 'final'
    else place = OLD_DISPATCH[f.dispatch or ''] or (f.status == 'running' and 'running' or 'waiting') end
  end
  return {id = job_id, key = key, f = f, place = place, status = f.status,
          model = f.model_id or '?', tenant = tenant_of(f.tenant),
          class = f.priority == 'batch' and 'batch' or 'interactive'}
end

-- Writes fields of the record and keeps the loaded copy in step. `values` is a flat list of
-- name, value pairs; '' clears a field.
local function set_fields(job, values)
  redis.call('HSET', job.key, unpack(values))
  for i = 1, #values, 2 do
    local v = values[i + 1]
    if v == '' then job.f[values[i]] = nil else job.f[values[i]] = tostring(v) end
  end
end

local function number(job, name) return tonumber(job.f[name] or '') or 0 end

-- One status message, on the fleet's channel and on the job's own; and on its tenant's, with
-- where the job is (what the console's live pages follow: a few bytes, never the prompt). A
-- job starting is announced as it leaves `released`, before its place is written: 'running'.
local function announce(job_id, status)
  local message = '{"job_id":"' .. job_id .. '","status":"' .. status .. '"}'
  redis.call('PUBLISH', K.EVENTS, message)
  redis.call('PUBLISH', K.JOB_PREFIX .. job_id .. ':events', message)
  local owner = redis.call('HMGET', K.JOB_PREFIX .. job_id, 'tenant', 'place')
  if owner[1] and owner[1] ~= '' then
    local place = TERMINAL[status] and 'final' or (status == 'running' and 'running' or owner[2])
    redis.call('PUBLISH', K.TENANT_PREFIX .. owner[1] .. K.TENANT_EVENTS,
               '{"job_id":"' .. job_id .. '","status":"' .. status .. '","place":"' ..
               (place or '') .. '"}')
  end
end

-- A message template with placeholders (K.JOB_ID, K.NONCE, K.DELIVERY_ID) split once, then
-- filled by concatenation (a gsub over a whole message per job costs tens of µs). Each process
-- has its own templates: the cache is emptied when it holds many.
local split_templates, split_count = {}, 0
local TEMPLATES_KEPT = 256
local function fill(template, values)
  local parts = split_templates[template]
  if not parts then
    if split_count >= TEMPLATES_KEPT then split_templates, split_count = {}, 0 end
    split_count = split_count + 1
    parts = {}
    local rest = template
    while true do
      local at, name, stop = nil, nil, nil
      for _, placeholder in ipairs({K.JOB_ID, K.NONCE, K.DELIVERY_ID}) do
        local s, e = string.find(rest, placeholder, 1, true)
        if s and (not at or s < at) then at, name, stop = s, placeholder, e end
      end
      if not at then table.insert(parts, rest); break end
      table.insert(parts, string.sub(rest, 1, at - 1))
      table.insert(parts, {name})
      rest = string.sub(rest, stop + 1)
    end
    split_templates[template] = parts
  end
  local out = {}
  for i, part in ipairs(parts) do
    if type(part) == 'table' then out[i] = values[part[1]] else out[i] = part end
  end
  return table.concat(out)
end

-- Defined further on, used before.
local resume_paused, transition
