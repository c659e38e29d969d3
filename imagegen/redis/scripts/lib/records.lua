-- Job records: loading the fields a transition reads, the status messages.
local function job_key(job_id) return K.JOB_PREFIX .. job_id end

local JOB_FIELDS = {'status', 'place', 'model_id', 'tenant', 'priority', 'expires_ms', 'seq',
                    'created_ms', 'started_ms', 'cache_entry', 'cache_copy', 'copy_from_key',
                    'after_job', 'reserved_micro', 'reserved_day', 'reserved_month',
                    'billed_micro', 'calling', 'lease_owner', 'lease_until_ms',
                    'cancel_requested', 'price_micro', 'batch_id', 'open', 'claimed_ms',
                    'recall', 'dispatch', 'avoid_pool', 'webhook_url', 'webhook_events',
                    'replays', 'webhook_deliveries', 'chain_last', 'no_inputs'}

-- Records written before places existed name the dispatcher's state instead.
local OLD_DISPATCH = {waiting = 'waiting', delayed = 'delayed', released = 'released',
                      claimed = 'running', following = 'following', after = 'after'}

local function tenant_of(value)
  if value and value ~= '' then return value end
  return K.NO_TENANT
end

-- The job as a table from its record's fields `f` (names to values, none ''): id, key, tenant
-- (K.NO_TENANT for none), model, class, place, status and the raw fields `f`.
local function job_from_fields(job_id, f)
  local place = f.place
  if not place then
    if TERMINAL[f.status] then place = 'final'
    else place = OLD_DISPATCH[f.dispatch or ''] or (f.status == 'running' and 'running' or 'waiting') end
  end
  return {id = job_id, key = job_key(job_id), f = f, place = place, status = f.status,
          model = f.model_id or '?', tenant = tenant_of(f.tenant),
          class = f.priority == 'batch' and 'batch' or 'interactive'}
end

-- The job as a table (nil when it has no record).
local function load_job(job_id)
  local values = redis.call('HMGET', job_key(job_id), unpack(JOB_FIELDS))
  if not values[1] then return nil end
  local f = {}
  for i, name in ipairs(JOB_FIELDS) do
    if values[i] and values[i] ~= '' then f[name] = values[i] end
  end
  return job_from_fields(job_id, f)
end

-- A value as a field holds it: a whole number's digits (formatted once, as Redis would store
-- it), any other value as tostring has it (Redis formats a fraction itself, with more digits).
local function field_text(v)
  if type(v) ~= 'number' then return v, v end
  if v == math.floor(v) and v > -1e14 and v < 1e14 then
    local digits = string.format('%d', v)
    return digits, digits
  end
  return v, tostring(v)
end

-- Writes fields of the record and keeps the loaded copy in step. `values` is a flat list of
-- name, value pairs; '' clears a field. Inside a transition the writes are gathered and made
-- by one HSET as it ends (`flush_fields`); the loaded copy is what the transition reads.
local function set_fields(job, values)
  local pending, f = job.pending, job.f
  local writes = not pending and {} or nil
  for i = 1, #values, 2 do
    local name = values[i]
    local written, text = field_text(values[i + 1])
    if writes then writes[i], writes[i + 1] = name, written else pending[name] = written end
    if text == '' then f[name] = nil else f[name] = text end
  end
  if writes then redis.call('HSET', job.key, unpack(writes)) end
end

local function flush_fields(job)
  local pending = job.pending
  job.pending = nil
  if not pending then return end
  local values = {}
  for name, v in pairs(pending) do
    values[#values + 1] = name
    values[#values + 1] = v
  end
  if #values > 0 then redis.call('HSET', job.key, unpack(values)) end
end

local function number(job, name) return tonumber(job.f[name] or '') or 0 end

-- The attempt log with `line` added at its end.
local function attempt_log_with(job, line)
  return (redis.call('HGET', job.key, 'attempt_log') or '') .. line .. '\n'
end

-- One status message, on the fleet's channel and on the job's own; and on its tenant's, with
-- where the job is (what the console's live pages follow: a few bytes, never the prompt). A
-- job starting is announced as it leaves `released`, before its place is written: 'running'.
local function announce(job, status)
  local message = '{"job_id":"' .. job.id .. '","status":"' .. status .. '"}'
  redis.call('PUBLISH', K.EVENTS, message)
  redis.call('PUBLISH', job.key .. ':events', message)
  if job.tenant ~= K.NO_TENANT then
    local place = TERMINAL[status] and 'final' or (status == 'running' and 'running' or job.place)
    redis.call('PUBLISH', K.TENANT_PREFIX .. job.tenant .. K.TENANT_EVENTS,
               '{"job_id":"' .. job.id .. '","status":"' .. status .. '","place":"' ..
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
