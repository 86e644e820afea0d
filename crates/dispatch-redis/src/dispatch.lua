#!lua name=dispatch

-- The dispatcher's Redis Functions. They know nothing of dispatch rules: they compare record
-- versions (the fencing tokens) and write what the engine decided, checking every condition
-- before the first write because Redis does not roll back. Records are opaque JSON strings.
--
-- Key roles (all keys of one pool share one hash tag, so each call touches one slot):
--   records  string "<version>:<JSON>" (one string: a hash with a long field would be stored
--                   as a hashtable, about 200 bytes more per record)
--   agents   zset  agent ids (score 0, for ordered paging)
--   live     set   ids of cases that are not terminal
--   offers   hash  offer id -> case id
--   timers   zset  timer key -> due time (ms, store clock)
--   counters hash  counter name -> total
--   log      stream change log: k = a|c, id = record id, v = version written (0: deleted)

local function version_of(key)
  local raw = redis.call('GET', key)
  if raw then
    return tonumber(string.match(raw, '^(%d+):'))
  end
  return 0
end

local function log(key, maxlen, kind, id, version)
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'k', kind, 'id', id, 'v', version)
end

-- KEYS: case, agent, agents, live, offers, timers, counters, log
-- ARGV[1]: JSON {c = {id, exp, live, offer} | absent, a = {id, exp} | absent,
--                t = [[member, due]], n = [[name, delta]], max = log length}
-- ARGV[2]: the case's JSON, ARGV[3]: the agent's JSON (each already carrying version exp + 1)
-- Returns {1} when written, {0, 'case' | 'agent'} when a version did not match (nothing written).
local function commit(keys, args)
  local m = cjson.decode(args[1])
  local c = m['c']
  local a = m['a']
  if c and version_of(keys[1]) ~= tonumber(c['exp']) then
    return {0, 'case'}
  end
  if a and version_of(keys[2]) ~= tonumber(a['exp']) then
    return {0, 'agent'}
  end
  if c then
    redis.call('SET', keys[1], (tonumber(c['exp']) + 1) .. ':' .. args[2])
    if c['live'] then
      redis.call('SADD', keys[4], c['id'])
    else
      redis.call('SREM', keys[4], c['id'])
    end
    if c['offer'] ~= '' then
      redis.call('HSET', keys[5], c['offer'], c['id'])
    end
        log(keys[8], m['max'], 'c', c['id'], tonumber(c['exp']) + 1)
  end
  if a then
    redis.call('SET', keys[2], (tonumber(a['exp']) + 1) .. ':' .. args[3])
    redis.call('ZADD', keys[3], 0, a['id'])
        log(keys[8], m['max'], 'a', a['id'], tonumber(a['exp']) + 1)
  end
  for _, t in ipairs(m['t']) do
    redis.call('ZADD', keys[6], t[2], t[1])
  end
  for _, n in ipairs(m['n']) do
    redis.call('HINCRBY', keys[7], n[1], n[2])
  end
  return {1}
end

-- KEYS: agent, agents, log   ARGV: expected version, id, log length
local function remove_agent(keys, args)
  if version_of(keys[1]) ~= tonumber(args[1]) then
    return 0
  end
  redis.call('DEL', keys[1])
  redis.call('ZREM', keys[2], args[2])
    log(keys[3], args[3], 'a', args[2], 0)
  return 1
end

-- KEYS: timers   ARGV: member, due. Disarms the timer only if it is still due at `due`.
local function clear_timer(keys, args)
  local due = redis.call('ZSCORE', keys[1], args[1])
  if due and tonumber(due) == tonumber(args[2]) then
    redis.call('ZREM', keys[1], args[1])
    return 1
  end
  return 0
end

-- KEYS: case, live, offers, log   ARGV: case id, JSON list of offer ids, log length.
-- Deletes the case only if it is no longer live.
local function purge_case(keys, args)
  if redis.call('SISMEMBER', keys[2], args[1]) == 1 or redis.call('EXISTS', keys[1]) == 0 then
    return 0
  end
  redis.call('DEL', keys[1])
  for _, o in ipairs(cjson.decode(args[2])) do
    redis.call('HDEL', keys[3], o)
  end
    log(keys[4], args[3], 'c', args[1], 0)
  return 1
end

redis.register_function('dispatch_commit', commit)
redis.register_function('dispatch_remove_agent', remove_agent)
redis.register_function('dispatch_clear_timer', clear_timer)
redis.register_function('dispatch_purge_case', purge_case)
