"""Every Lua script of the job store, as text (arq keeps its scripts the same way).

A script runs atomically in Redis: each one here is a read-decide-write that
must not interleave with another writer. Field names and states come from
``model``, so a script and the Python that reads its result agree.
"""

from __future__ import annotations

from tasks.store.model import DESTINATION_FIELD_PREFIX, JOB_FIELD, DestinationState

# Create a job unless it exists (the same export.record message again) or its
# idempotency key (KEYS[5], '' for none) already names a live job; returns {job
# id, 1 if created}. A new job joins the sorted sets KEYS[6..] at its creation
# time, as member ARGV[7..] (its id, or a name for the filters), each set trimmed
# to the retention period: one round trip writes the job and its indexes.
CREATE = """
if KEYS[5] ~= '' then
    local other = redis.call('GET', KEYS[5])
    if other and redis.call('EXISTS', ARGV[5] .. other) == 1 then return {other, 0} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {ARGV[1], 0} end
local indexed = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7 + indexed))
redis.call('EXPIRE', KEYS[1], ARGV[2])
local oldest = ARGV[3] - ARGV[2]
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', oldest)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[1], 'EX', ARGV[2]) end
for i = 1, indexed do
    local key = KEYS[5 + i]
    redis.call('ZADD', key, ARGV[3], ARGV[6 + i])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', oldest)
    redis.call('EXPIRE', key, ARGV[2])
end
return {ARGV[1], 1}
"""
# Compare-and-set on a job's hash: write the new fields only if the fields read
# still hold what was read ('' = absent); then add the job to (score) or remove it
# from ('-') the sorted sets named in KEYS[2..]; then, if more keys follow (the
# all-jobs index, a state set, the state sets), move the job to that state's
# index (job_index.MOVE_FUNCTION). ARGV: retention, job id, the number of fields
# checked, field/value pairs, the number written, field/value pairs, the number
# of sorted sets, one score or '-' per sorted set, now. Returns 1 when written.
COMPARE_AND_SET = """
local key, i = KEYS[1], 4
for _ = 1, tonumber(ARGV[3]) do
    if (redis.call('HGET', key, ARGV[i]) or '') ~= ARGV[i + 1] then return 0 end
    i = i + 2
end
local writes = tonumber(ARGV[i])
i = i + 1
for _ = 1, writes do
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
    i = i + 2
end
redis.call('EXPIRE', key, ARGV[1])
local schedules = tonumber(ARGV[i])
i = i + 1
for k = 2, 1 + schedules do
    if ARGV[i] == '-' then
        redis.call('ZREM', KEYS[k], ARGV[2])
    else
        redis.call('ZADD', KEYS[k], ARGV[i], ARGV[2])
    end
    i = i + 1
end
if #KEYS > 1 + schedules then
    local leave = {}
    for k = 4 + schedules, #KEYS do leave[#leave + 1] = KEYS[k] end
    move(KEYS[2 + schedules], KEYS[3 + schedules], nil, leave, ARGV[2], ARGV[i], ARGV[1])
end
return 1
"""
# Write fields (ARGV[2..] as field/value pairs) of a job that still exists: a
# late task never resurrects an expired job.
WRITE_FIELDS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Fencing: a copy of a destination's task writes only while its lease (KEYS[2])
# still holds its token (ARGV[2]); compared in the script that writes, so a copy
# that lost its lease (paused, cut off) never overwrites the copy that took it.
# WRITE_FIELDS so fenced: ARGV[1] retention, ARGV[2] token, ARGV[3..] field/value
# pairs. Returns -1 (lease lost, nothing written), 0 (no such job) or 1.
FENCED_WRITE_FIELDS = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
# A call log entry (KEYS[1]; ARGV[3] field, ARGV[4] value, ARGV[1] retention),
# fenced by the lease KEYS[2] and token ARGV[2]. Returns -1 (lease lost) or 1.
FENCED_LOG_CALL = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


# A destination task's first round trip: take its lease (KEYS[1]; ARGV token,
# lifetime in ms); if its entry is still as created (never tried), start attempt 1
# in the same trip, with the attempt's start time, and move the job from queued
# to running (KEYS[3..]: see job_index.first_attempt_keys). Returns {lease taken,
# attempt 1 started, the job's hash}. Follows job_index.MOVE_FUNCTION.
START_FIRST_ATTEMPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 0, {}} end
local started = 0
if (redis.call('HGET', KEYS[2], ARGV[6]) or '') == ARGV[7] then
    redis.call('HSET', KEYS[2], ARGV[6], ARGV[8], ARGV[9], ARGV[10])
    redis.call('EXPIRE', KEYS[2], ARGV[4])
    local leave = {}
    for i = 6, #KEYS do leave[#leave + 1] = KEYS[i] end
    move(KEYS[3], KEYS[4], KEYS[5], leave, ARGV[3], ARGV[5], ARGV[4])
    started = 1
end
return {1, started, redis.call('HGETALL', KEYS[2])}
"""


# Store a destination's entry (ARGV[3], ARGV[4]) in a job that still exists; if
# every destination of the plan now has its outcome (under first_success: one
# succeeded), the job joins ``settled`` (KEYS[2]) at ARGV[2]: its finish is due.
# With a lease (KEYS[3], token ARGV[6]), fenced: a copy that lost it writes
# nothing and gets -1, unless the entry is already this very one (its own write,
# sent again after Redis came back). Returns 1 when written, 0 without a job, 2
# when written into a job whose run has ended (an outcome arriving late).
# Field names and states are job_model's.
RECORD_RESULT = f"""
if KEYS[3] and redis.call('GET', KEYS[3]) ~= ARGV[6] then
    if redis.call('HGET', KEYS[1], ARGV[3]) == ARGV[4] then return 1 end
    return -1
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local job = cjson.decode(redis.call('HGET', KEYS[1], '{JOB_FIELD}'))
local settled = true
for _, name in ipairs(job['destinations']) do
    local raw = redis.call('HGET', KEYS[1], '{DESTINATION_FIELD_PREFIX}' .. name)
    local state = raw and cjson.decode(raw)['state']
    if state == '{DestinationState.SUCCESS}' and job['strategy'] == 'first_success' then
        settled = true
        break
    end
    if state ~= '{DestinationState.SUCCESS}' and state ~= '{DestinationState.FAILURE}' then
        settled = false
    end
end
if settled then redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[5]) end
if job['finished_at'] ~= cjson.null and job['finished_at'] ~= nil then return 2 end
return 1
"""

# unschedule_announced(): the job (KEYS[1]) leaves the announce set (KEYS[2]) only while
# its run and telling (ARGV[3], ARGV[4]) are the ones just announced: a run told again
# meanwhile stays, to be announced too.
UNSCHEDULE_ANNOUNCED = """
local job = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1]) or '{}')
if tostring(job['runs'] or 1) == ARGV[3] and tostring(job['retold'] or 0) == ARGV[4] then
    return redis.call('ZREM', KEYS[2], ARGV[2])
end
return 0
"""



# move(): moves a job (``member``) into the set ``target`` and out of the sets
# ``leave``, keeping its creation time as score (read from ``index``, the
# all-jobs index); with ``guard``, only while the job is still a member of it
# (queued -> running on the first attempt, never back from finished). The job
# store's own scripts call it too.
MOVE_FUNCTION = """
local function move(index, target, guard, leave, member, now, retention)
  local score = redis.call('ZSCORE', index, member)
  if not score then return 0 end
  if guard and not redis.call('ZSCORE', guard, member) then return 0 end
  for _, key in ipairs(leave) do
    if key ~= target then redis.call('ZREM', key, member) end
  end
  redis.call('ZADD', target, score, member)
  redis.call('ZREMRANGEBYSCORE', target, '-inf', tonumber(now) - tonumber(retention))
  redis.call('EXPIRE', target, retention)
  return 1
end
"""
# KEYS: the all-jobs index, the target, then the sets to leave (the guard first,
# when ARGV[4] is "1"); ARGV: job id, now, retention, guarded.
MOVE = MOVE_FUNCTION + """
local leave = {}
for i = 3, #KEYS do leave[#leave + 1] = KEYS[i] end
local guard = nil
if ARGV[4] == '1' then guard = KEYS[3] end
return move(KEYS[1], KEYS[2], guard, leave, ARGV[1], ARGV[2], ARGV[3])
"""



# close_breaker(): the service answered: its breaker (``breaker``) closes and its streak
# of failures ends; the probe key is dropped if ``token`` holds it. 1 if it was down.
# Two reads when it was up and no failure was counted: every stored success runs it.
CLOSE_BREAKER_FUNCTION = """
local function close_breaker(breaker, probe, token)
  local state = redis.call('HMGET', breaker, 'failures', 'down_since')
  if (state[1] and state[1] ~= '0') or state[2] then
    redis.call('HDEL', breaker, 'down_since', 'probe_at', 'probes', 'interval', 'streak_since')
    redis.call('HSET', breaker, 'failures', '0')
  end
  if token ~= '' and redis.call('GET', probe) == token then redis.call('DEL', probe) end
  if state[2] then return 1 end
  return 0
end
"""

# KEYS: job hash, exports, duration, last_success, the destination's breaker; ARGV:
# attempt field, destination, outcome, now, bucket bounds... The attempt's start is
# read and dropped here, so an attempt is timed once even when two writers race. A
# success closes the breaker in the same step.
COUNT_RESULT = CLOSE_BREAKER_FUNCTION + """
local started = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
local dest, now = ARGV[2], tonumber(ARGV[4])
redis.call('HINCRBY', KEYS[2], dest .. '|' .. ARGV[3], 1)
if started then
  local duration = math.max(0, now - tonumber(started))
  local bucket = '+Inf'
  for i = 5, #ARGV do
    if duration <= tonumber(ARGV[i]) then bucket = ARGV[i]; break end
  end
  redis.call('HINCRBY', KEYS[3], dest .. '|' .. bucket, 1)
  redis.call('HINCRBYFLOAT', KEYS[3], dest .. '|sum', duration)
  redis.call('HINCRBY', KEYS[3], dest .. '|count', 1)
end
if ARGV[3] == 'success' then
  local last = redis.call('HGET', KEYS[4], dest)
  if not last or tonumber(last) < now then redis.call('HSET', KEYS[4], dest, ARGV[4]) end
  close_breaker(KEYS[5], '', '')
end
return 1
"""



# Compare-and-renew / compare-and-delete: never touch a lease another copy holds now.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


# -- a destination's breaker (``breaker``): KEYS[1] its hash, KEYS[2] its probe key --------
# Times are the Redis server's, so workers whose clocks differ agree.
_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

# Up: go {1, '0'}. Down, its probe due and nobody probing: go as
# the probe (2), holding the probe key (ARGV[2], for ARGV[1] ms). Either leaves the
# waiting set (KEYS[3]). Else wait: {0, seconds until the next probe, its interval}.
BREAKER_ADMIT = _NOW + """
if not redis.call('HGET', KEYS[1], 'down_since') then
    redis.call('ZREM', KEYS[3], ARGV[2])
    return {1, '0'}
end
local probe_at = tonumber(redis.call('HGET', KEYS[1], 'probe_at') or '0')
if now >= probe_at and redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then
    redis.call('ZREM', KEYS[3], ARGV[2])
    return {2, '0'}
end
return {0, tostring(math.max(probe_at - now, 0)), redis.call('HGET', KEYS[1], 'interval')}
"""

# A call found the service down (ARGV[4], the error). ARGV[1] consecutive ones, the
# streak lasting at least a probe interval (ARGV[2] s; a flaky service answers within
# it, one that is down does not), mark it down (returns 1); a failed probe (the probe
# key holds ARGV[5]) doubles the interval up to ARGV[3] seconds.
BREAKER_FAILED = _NOW + """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[4], 'last_failure', tostring(now))
if failures == 1 then redis.call('HSET', KEYS[1], 'streak_since', tostring(now)) end
local streak = now - tonumber(redis.call('HGET', KEYS[1], 'streak_since') or tostring(now))
local probing = redis.call('GET', KEYS[2]) == ARGV[5]
if probing then redis.call('DEL', KEYS[2]) end
if redis.call('HGET', KEYS[1], 'down_since') then
    if probing then
        local probes = redis.call('HINCRBY', KEYS[1], 'probes', 1)
        local interval = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ probes)
        redis.call('HSET', KEYS[1], 'interval', tostring(interval),
                   'probe_at', tostring(now + interval))
    end
    return 0
end
if failures >= tonumber(ARGV[1]) and streak >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'down_since', tostring(now), 'probes', '0',
               'interval', ARGV[2], 'probe_at', tostring(now + tonumber(ARGV[2])))
    return 1
end
return 0
"""

# The probe's call was answered (ARGV[1] its token): the breaker closes (see
# close_breaker); returns 1 if it was down.
BREAKER_ANSWERED = CLOSE_BREAKER_FUNCTION + "return close_breaker(KEYS[1], KEYS[2], ARGV[1])\n"
