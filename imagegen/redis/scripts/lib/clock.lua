-- The clock every script runs on: the Redis server's, unless the caller passes its own in
-- ARGV[1] (tests drive time; production passes ''). `begin`, called first by every function,
-- reads it once per call, with the periods the spend ledgers use.
local DAY_MS = 86400000
-- NOW_DIGITS: NOW_MS as the decimal string Redis stores, formatted once per call (a number
-- passed to redis.call is formatted again on every call, with printf's %.17g).
local NOW, NOW_MS, NOW_DIGITS, PERIODS

-- A UTC date from days since 1970-01-01, and back (H. Hinnant's civil calendar algorithms).
local function civil_from_days(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The spend ledgers' periods at `ms` (UTC): today 'd:YYYY-MM-DD', this month 'm:YYYY-MM', and
-- when each ends (ms).
local function periods_at(ms)
  local days = math.floor(ms / DAY_MS)
  local y, m, d = civil_from_days(days)
  local next_y, next_m = y, m + 1
  if next_m > 12 then next_y, next_m = y + 1, 1 end
  return string.format('d:%04d-%02d-%02d', y, m, d), string.format('m:%04d-%02d', y, m),
         (days + 1) * DAY_MS, days_from_civil(next_y, next_m, 1) * DAY_MS
end

-- `ms` as an ISO 8601 UTC time with milliseconds (what the attempt log's `at` holds).
local function iso_utc(ms)
  local days = math.floor(ms / DAY_MS)
  local y, m, d = civil_from_days(days)
  local rest = ms - days * DAY_MS
  local hours = math.floor(rest / 3600000)
  local minutes = math.floor((rest - hours * 3600000) / 60000)
  local seconds = (rest - hours * 3600000 - minutes * 60000) / 1000
  return string.format('%04d-%02d-%02dT%02d:%02d:%06.3fZ', y, m, d, hours, minutes, seconds)
end

-- The settings job scripts share (ARGV[2..6]): retention s, webhook grace ms, the delivery
-- message template ('' for scripts that add no delivery), ledger ttl s, tenants' weights (JSON). Until a script reads them (and in
-- scripts that do not take them), tenants' weights are their records' or 1.
local CTX

local function begin(ARGV)
  if ARGV[1] ~= nil and ARGV[1] ~= '' then
    NOW = tonumber(ARGV[1])
  else
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  end
  NOW_MS = math.floor(NOW)
  NOW_DIGITS = string.format('%d', NOW_MS)
  PERIODS = nil
  CTX = {weights = {}}
end

-- Today's and this month's ledger names and when each ends, worked out once per call.
local function ledger_periods()
  if not PERIODS then PERIODS = {periods_at(NOW_MS)} end
  return PERIODS[1], PERIODS[2], PERIODS[3], PERIODS[4]
end

-- The weights as last decoded, kept while callers pass the same JSON (most calls).
local weights_json, weights_decoded

local function job_context(ARGV)
  if ARGV[6] ~= weights_json then weights_json, weights_decoded = ARGV[6], cjson.decode(ARGV[6]) end
  CTX = {retention = tonumber(ARGV[2]), grace = tonumber(ARGV[3]),
         delivery_template = ARGV[4], ledger_ttl = tonumber(ARGV[5]),
         weights = weights_decoded}
  return CTX
end
-- The first ARGV index after the shared ones.
local ARG0 = 7
