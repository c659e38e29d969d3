-- Marks (ARGV[2] = '1') or clears ('') the Bedrock call in flight of the job's lease owner. A job
-- put back because its lease ran out while a call was marked lost that call's answer: Bedrock
-- billed the image it generated, so the redrive books it (``job_redrive``).
-- KEYS: job hash. ARGV: lease owner, '1' or ''.
-- Returns 1 when the owner holds the job, else 0.
if not held_by(KEYS[1], ARGV[1]) then return 0 end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'calling', now_ms())
else
  redis.call('HSET', KEYS[1], 'calling', '')
end
return 1
