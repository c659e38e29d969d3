-- Marks (ARGV[9] = '1') or clears ('') the Bedrock call in flight of the job's lease owner. A
-- job put back because its lease ran out while a call was marked lost that call's answer:
-- Bedrock billed the image it generated, so the redrive books it (event redrive).
-- A job whose image was already bought needed no reservation at its release (a re-run most
-- often adopts that image); when it must call again, it reserves the price here, or, when its
-- tenant's hard budget has no room, is marked to be released under the budget again and the
-- call does not start.
-- A call is not marked, and must not start, when a cancel was requested since the claim.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, 8 lease owner, 9 '1' or ''.
-- Touches: imagegen:tenant:{t} (budgets, read), imagegen:spend:{t}:{period} (a reservation).
-- Returns 'ok', 'lease' (the owner does not hold the job), 'canceled' (a cancel was requested:
-- end the job canceled) or 'budget' (no room: give it back).
local ctx = job_context(ARGV)
local job = load_job(ARGV[ARG0])
local held = job and job.place == 'running' and job.f.lease_owner == ARGV[ARG0 + 1]
if not held then return 'lease' end
if ARGV[ARG0 + 2] ~= '1' then
  set_fields(job, {'calling', ''})
  return 'ok'
end
if job.f.cancel_requested == '1' then return 'canceled' end
if number(job, 'reserved_micro') <= 0 and not job.f.copy_from_key then
  local price = number(job, 'price_micro')
  local room = budget_room(job.tenant)
  if budget_blocked_until(room, price) then
    set_fields(job, {'recall', '1'})
    return 'budget'
  end
  EFFECTS.reserve(job, {reserve = price})
end
set_fields(job, {'calling', NOW_MS})
return 'ok'
