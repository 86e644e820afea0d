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
--   log      stream change log: k = a|c, id = record id, v = version written (0: deleted),
--                   s = the high-water mark after the write
--   epoch    string "<epoch>:<run id>:<began at ms>:<mark found>": the store's epoch (see
--                   `fence`); the last part is the high-water mark the server had when the
--                   epoch began because it had lost writes
--   seq      string the high-water mark: bumped by every write, so a Redis that comes back
--                   behind what a dispatcher saw written is known to have lost writes
--
-- Epochs. Redis with AOF `everysec` may come back from a crash without its last second of
-- writes; after a failover a replica may lack the newest ones. Either way the serving
-- process has a new run id. Every write names the epoch its dispatcher joined and is refused
-- (error FENCED) when the server's run id is not the one the epoch began on, or the epoch
-- moved: the dispatcher then joins the new epoch (`dispatch_join_epoch`). The epoch opens a
-- reconcile window only when writes were lost: when the high-water mark is behind the one a
-- dispatcher saw. Then the dispatchers put back what they know (`dispatch_restore`) before
-- anything new is written. A clean restart or a slot moved to another node loses nothing and
-- costs no window.

local function version_of(key)
  local raw = redis.call('GET', key)
  if raw then
    return tonumber(string.match(raw, '^(%d+):'))
  end
  return 0
end

local function run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end

local function read_epoch(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  local e, rid, at, found = string.match(raw, '^(%d+):(%x+):(%d+):?(%d*)$')
  return {epoch = tonumber(e), rid = rid, at = tonumber(at), found = tonumber(found) or 0}
end

-- Raises FENCED unless a writer of `epoch` may write now.
local function fence(epoch_key, epoch)
  local g = read_epoch(epoch_key)
  if not g or g.rid ~= run_id() then
    error({err = 'FENCED the store restarted since this dispatcher joined its epoch'})
  end
  if g.epoch ~= tonumber(epoch) then
    error({err = 'FENCED the store moved to epoch ' .. g.epoch})
  end
end

local function log(key, maxlen, kind, id, version, seq)
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'k', kind, 'id', id, 'v', version, 's', seq)
end

local function high_water(key)
  return tonumber(redis.call('GET', key) or '0')
end

-- Writes one record at version `v` with the index entries of its kind (`m`: k = a|c, id, v,
-- live and offers for a case) and logs it with the high-water mark `seq`. Shared by commits
-- and restores. `idx`: {agents, live, offers, log}.
local function write_record(key, m, body, idx, maxlen, seq)
  redis.call('SET', key, m['v'] .. ':' .. body)
  if m['k'] == 'c' then
    if m['live'] then
      redis.call('SADD', idx.live, m['id'])
    else
      redis.call('SREM', idx.live, m['id'])
    end
    for _, o in ipairs(m['offers']) do
      redis.call('HSET', idx.offers, o, m['id'])
    end
  else
    redis.call('ZADD', idx.agents, 0, m['id'])
  end
  log(idx.log, maxlen, m['k'], m['id'], m['v'], seq)
end

-- KEYS: case, agent, agents, live, offers, timers, counters, log, epoch, seq
-- ARGV[1]: JSON {c = record meta | absent, a = record meta | absent, t = [[member, due]],
--                n = [[name, delta]], max = log length}; a record's meta is
--                {k, id, exp = the version it must have now, v = the version it is written at,
--                 live and offers for a case} (the writer decides both; nothing is computed here)
-- ARGV[2]: the case's JSON, ARGV[3]: the agent's JSON
-- ARGV[4]: the writer's epoch
-- Returns {1, high-water mark, counter name, total, ...} when written (the counters it moved,
-- with their new totals), {0, 'case' | 'agent'} when a version did not match (nothing written).
local function commit(keys, args)
  fence(keys[9], args[4])
  local m = cjson.decode(args[1])
  local c = m['c']
  local a = m['a']
  if c and version_of(keys[1]) ~= tonumber(c['exp']) then
    return {0, 'case'}
  end
  if a and version_of(keys[2]) ~= tonumber(a['exp']) then
    return {0, 'agent'}
  end
  local idx = {agents = keys[3], live = keys[4], offers = keys[5], log = keys[8]}
  local seq = redis.call('INCR', keys[10])
  if c then
    write_record(keys[1], c, args[2], idx, m['max'], seq)
  end
  if a then
    write_record(keys[2], a, args[3], idx, m['max'], seq)
  end
  for _, t in ipairs(m['t']) do
    redis.call('ZADD', keys[6], t[2], t[1])
  end
  local out = {1, seq}
  for _, n in ipairs(m['n']) do
    table.insert(out, n[1])
    table.insert(out, redis.call('HINCRBY', keys[7], n[1], n[2]))
  end
  return out
end

-- KEYS: agent, agents, log, epoch, seq   ARGV: expected version, id, log length, epoch
local function remove_agent(keys, args)
  fence(keys[4], args[4])
  if version_of(keys[1]) ~= tonumber(args[1]) then
    return 0
  end
  redis.call('DEL', keys[1])
  redis.call('ZREM', keys[2], args[2])
  log(keys[3], args[3], 'a', args[2], 0, redis.call('INCR', keys[5]))
  return 1
end

-- KEYS: timers, epoch   ARGV: member, due, epoch. Disarms the timer only if it is still due at `due`.
local function clear_timer(keys, args)
  fence(keys[2], args[3])
  local due = redis.call('ZSCORE', keys[1], args[1])
  if due and tonumber(due) == tonumber(args[2]) then
    redis.call('ZREM', keys[1], args[1])
    return 1
  end
  return 0
end

-- KEYS: case, live, offers, log, epoch, seq   ARGV: case id, JSON list of offer ids, log length,
-- epoch. Deletes the case only if it is no longer live.
local function purge_case(keys, args)
  fence(keys[5], args[4])
  if redis.call('SISMEMBER', keys[2], args[1]) == 1 or redis.call('EXISTS', keys[1]) == 0 then
    return 0
  end
  redis.call('DEL', keys[1])
  for _, o in ipairs(cjson.decode(args[2])) do
    redis.call('HDEL', keys[3], o)
  end
  log(keys[4], args[3], 'c', args[1], 0, redis.call('INCR', keys[6]))
  return 1
end

-- KEYS: epoch, seq   ARGV: the epoch the caller knew (0: none), now (ms, store clock), the
-- highest high-water mark the caller saw written.
-- Joins the current epoch, beginning a new one if the server is not the one it began on, or if
-- this caller saw writes the server no longer has (its mark is behind the caller's). Only the
-- latter opens a reconcile window. Returns {epoch, began at (0: no window: nothing was lost),
-- the mark the server had when the loss was found}.
local function join_epoch(keys, args)
  local rid = run_id()
  local g = read_epoch(keys[1])
  local found = high_water(keys[2])
  local lost = tonumber(args[3]) > found
  if g and g.rid == rid and not lost then
    return {g.epoch, g.at, g.found}
  end
  local epoch = math.max(g and g.epoch or 0, tonumber(args[1])) + 1
  local at = 0
  if lost then
    at = tonumber(args[2])
  else
    found = 0
  end
  redis.call('SET', keys[1], epoch .. ':' .. rid .. ':' .. at .. ':' .. found)
  return {epoch, at, found}
end

-- KEYS: epoch   Returns {epoch (0: none), 1 if the server restarted since it began}.
local function epoch_status(keys, args)
  local g = read_epoch(keys[1])
  if not g then
    return {0, 1}
  end
  if g.rid ~= run_id() then
    return {g.epoch, 1}
  end
  return {g.epoch, 0}
end

-- KEYS: epoch, agents, live, offers, timers, log, seq, counters, closed, then one record key
-- per record
-- ARGV: epoch, log length, the caller's high-water mark, JSON [[counter, total]] it saw, JSON
-- [[case id, version]] of the cases it saw closed since the loss began, then per record: meta
-- JSON (as for commit, no `exp`; `t` = its timers), body. Raises the mark and each counter to
-- what the caller saw, and records its closings (kept for ten minutes: long enough for every
-- dispatcher's restore); then writes each record only where the stored one is older or missing,
-- and never a case in a version older than one some dispatcher saw it closed at. Returns how
-- many records it wrote.
local function restore(keys, args)
  fence(keys[1], args[1])
  if high_water(keys[7]) < tonumber(args[3]) then
    redis.call('SET', keys[7], args[3])
  end
  for _, n in ipairs(cjson.decode(args[4])) do
    if tonumber(redis.call('HGET', keys[8], n[1]) or '0') < tonumber(n[2]) then
      redis.call('HSET', keys[8], n[1], n[2])
    end
  end
  local closings = cjson.decode(args[5])
  for _, c in ipairs(closings) do
    if tonumber(redis.call('HGET', keys[9], c[1]) or '0') < tonumber(c[2]) then
      redis.call('HSET', keys[9], c[1], c[2])
    end
  end
  if #closings > 0 then
    redis.call('PEXPIRE', keys[9], 600000)
  end
  local seq = high_water(keys[7])
  local idx = {agents = keys[2], live = keys[3], offers = keys[4], log = keys[6]}
  local written = 0
  for i = 10, #keys do
    local m = cjson.decode(args[(i - 10) * 2 + 6])
    local v = tonumber(m['v'])
    local closed_at = 0
    if m['k'] == 'c' then
      closed_at = tonumber(redis.call('HGET', keys[9], m['id']) or '0')
    end
    if version_of(keys[i]) < v and (closed_at < v or not m['live']) then
      write_record(keys[i], m, args[(i - 10) * 2 + 7], idx, args[2], seq)
      for _, t in ipairs(m['t']) do
        redis.call('ZADD', keys[5], t[2], t[1])
      end
      written = written + 1
    end
  end
  return written
end

-- KEYS: epoch   ARGV: the caller's epoch. A write's checks without its writes: the Functions are
-- loaded, the server is the one the epoch began on, and it takes writes (under maxmemory with
-- noeviction Redis refuses a Function that may write: OOM). Readiness probes call it.
local function probe(keys, args)
  fence(keys[1], args[1])
  return 1
end

redis.register_function('dispatch_commit', commit)
redis.register_function('dispatch_probe', probe)
redis.register_function('dispatch_join_epoch', join_epoch)
redis.register_function{function_name = 'dispatch_epoch', callback = epoch_status, flags = {'no-writes'}}
redis.register_function('dispatch_restore', restore)
redis.register_function('dispatch_remove_agent', remove_agent)
redis.register_function('dispatch_clear_timer', clear_timer)
redis.register_function('dispatch_purge_case', purge_case)
