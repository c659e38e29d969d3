-- Reads the spend and budgets of many tenants in one call (the API's /metrics), writing nothing.
-- KEYS: per tenant three: its ledger of today, its ledger of this month, its record.
-- ARGV: 1 now (unused). Reads: only its KEYS.
-- Returns, per tenant in KEYS order, 11 values: today's spent, reserved, warned; this
-- month's spent, reserved, warned; the record's budget_daily_hard, budget_daily_soft,
-- budget_monthly_hard, budget_monthly_soft, budget_on_exceed (nil where absent).
local found = {}
for i = 1, #KEYS, 3 do
  for _, v in ipairs(redis.call('HMGET', KEYS[i], 'spent', 'reserved', 'warned')) do
    found[#found + 1] = v
  end
  for _, v in ipairs(redis.call('HMGET', KEYS[i + 1], 'spent', 'reserved', 'warned')) do
    found[#found + 1] = v
  end
  local budgets = redis.call('HMGET', KEYS[i + 2], 'budget_daily_hard', 'budget_daily_soft',
                             'budget_monthly_hard', 'budget_monthly_soft',
                             'budget_on_exceed')
  for j = 1, 5 do found[#found + 1] = budgets[j] end
end
return found
