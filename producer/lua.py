"""Lua shared by every script that changes a job, so each transition is written once.

``JOB_LUA`` defines:

- ``now_ms()``: the Redis server's clock.
- ``held_by(job_key, owner)``: the job is running under this lease owner.
- ``announce(job_id, status)``: one message on ``imagegen:events``.
- ``add_delivery(job_key, job_id, event, now, grace_ms, retention, template)``: when the job has
  a webhook for ``event``, write the delivery record, put it in the outbox
  (``imagegen:webhooks:due``, due after ``grace_ms`` unless a delivery task takes it first) and
  push its delivery message, made from ``template`` (``producer.messages``). A delivery's id is
  ``{job_id}:{event}`` (``:{n}`` after the n-th replay) and its ``webhook-id`` header
  ``msg_{job_id}_{event}[_{n}]``: both stay the same on every retry.
- ``unqueue(job_key, job_id)``: the job is no longer waiting: out of the queued and deadline
  sets (backpressure counts and expiry).
- ``finalize(job_key, job_id, status, now, retention, grace_ms, template)``: the final status:
  fields, expiry, the dead-letter set for ``failed``, the event, the webhook. Returns the new
  delivery id or ''.

Because the outbox entry and the status change happen in one script, a webhook can never be
lost between the two.
"""

from __future__ import annotations

from producer import keys
from producer.jobs import TERMINAL_STATUSES
from producer.messages import DELIVERY_ID_PLACEHOLDER, WEBHOOK_QUEUE

__all__ = ["JOB_LUA"]

_TERMINAL_SET = "{" + ", ".join(f"['{s.value}'] = true" for s in sorted(TERMINAL_STATUSES)) + "}"

JOB_LUA = f"""
local terminal = {_TERMINAL_SET}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function held_by(job_key, owner)
  return redis.call('HGET', job_key, 'status') == 'running'
     and redis.call('HGET', job_key, 'lease_owner') == owner
end

local function announce(job_id, status)
  redis.call('PUBLISH', '{keys.EVENTS_CHANNEL}',
    '{{"job_id":"' .. job_id .. '","status":"' .. status .. '"}}')
end

local function add_delivery(job_key, job_id, event, now, grace_ms, retention, template)
  local url = redis.call('HGET', job_key, 'webhook_url')
  if not url or url == '' then return '' end
  local events = redis.call('HGET', job_key, 'webhook_events') or ''
  if not string.find(',' .. events .. ',', ',' .. event .. ',', 1, true) then return '' end
  local suffix = (string.gsub(event, '^job%.', ''))
  local id = job_id .. ':' .. event
  local webhook_id = 'msg_' .. job_id .. '_' .. suffix
  local replays = redis.call('HGET', job_key, 'replays')
  if replays and replays ~= '' and replays ~= '0' then
    id = id .. ':' .. replays
    webhook_id = webhook_id .. '_' .. replays
  end
  local key = '{keys.WEBHOOK_KEY_PREFIX}' .. id
  if redis.call('EXISTS', key) == 1 then return '' end
  redis.call('HSET', key, 'delivery_id', id, 'job_id', job_id, 'event', event, 'url', url,
             'webhook_id', webhook_id, 'state', 'pending', 'attempts', 0, 'created_ms', now,
             'next_ms', now, 'lease_until_ms', 0)
  redis.call('EXPIRE', key, retention)
  redis.call('ZADD', '{keys.WEBHOOKS_DUE_KEY}', now + grace_ms, id)
  local listed = redis.call('HGET', job_key, 'webhook_deliveries') or ''
  if listed == '' then listed = id else listed = listed .. ',' .. id end
  redis.call('HSET', job_key, 'webhook_deliveries', listed)
  local message = string.gsub(template, '{DELIVERY_ID_PLACEHOLDER}', id)
  redis.call('LPUSH', '{WEBHOOK_QUEUE}', message)
  return id
end

local function unqueue(job_key, job_id)
  redis.call('ZREM', '{keys.QUEUED_KEY}', job_id)
  redis.call('ZREM', '{keys.DEADLINES_KEY}', job_id)
  local tenant = redis.call('HGET', job_key, 'tenant')
  if tenant and tenant ~= '' then
    redis.call('ZREM', '{keys.TENANT_KEY_PREFIX}' .. tenant .. ':queued', job_id)
  end
end

local function finalize(job_key, job_id, status, now, retention, grace_ms, template)
  unqueue(job_key, job_id)
  redis.call('HSET', job_key, 'status', status, 'finished_ms', now, 'lease_owner', '',
             'lease_until_ms', 0, 'next_attempt_ms', '')
  redis.call('EXPIRE', job_key, retention)
  if status == 'failed' then redis.call('ZADD', '{keys.DLQ_KEY}', now, job_id) end
  local model = redis.call('HGET', job_key, 'model_id') or '?'
  redis.call('HINCRBY', '{keys.STATS_KEY}', 'jobs|' .. model .. '|' .. status, 1)
  announce(job_id, status)
  return add_delivery(job_key, job_id, 'job.' .. status, now, grace_ms, retention, template)
end
"""
