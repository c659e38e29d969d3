-- Records a job that arrived in a raw message and broke the rules (event refuse): a `failed`
-- record saying why, written whole or not at all. Nothing happens when the job id already has
-- a record.
-- KEYS: job hash. ARGV: 1 now, 2-6 the job context, 7 job_id, then field/value pairs.
-- Touches: imagegen:stats, the events channels (a job refused never ran: no dead letter).
-- Returns 1 when recorded.
job_context(ARGV)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {'job_id', ARGV[ARG0], 'status', 'queued', 'created_ms', NOW_MS, 'attempts', 0}
for i = ARG0 + 1, #ARGV do table.insert(fields, ARGV[i]) end
redis.call('HSET', KEYS[1], unpack(fields))
local job = load_job(ARGV[ARG0])
job.place = 'new'
transition(job, 'refuse', {status = 'failed'})
return 1
