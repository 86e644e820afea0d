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
--   seg:<t> hash   demand-segment counts of the minute starting at <t> ms:
--                   "<segment>|<counter>" -> total (expires after the retention)
--   log      stream change log: k = a|c, id = record id, v = version written (0: deleted),
--                   s = the high-water mark after the write
--   epoch    string "<epoch>:<run id>:<began at ms>:<mark found>:<wait until ms>:<pending>":
--                   the store's epoch (see `fence`); <mark found> is the high-water mark the
--                   server had when the epoch began because it had lost writes; <pending> the
--                   comma-separated dispatchers it still waits for (until <wait until>)
--   members  hash   dispatcher id -> when it was last seen (ms, its store clock)
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
-- costs no reconcile window.
--
-- Whether a new server lost writes is known only once every dispatcher that wrote has told its
-- mark: the writes it lost were acknowledged to one dispatcher, maybe not the first to rejoin.
-- So a new epoch waits for every dispatcher seen lately (`members`, refreshed by each probe,
-- and the peers the joiner remembers) to rejoin, and after a loss to have put back what it
-- knows (`dispatch_checked_in`); writes other than restores are refused meanwhile (error
-- RECONCILING), and at the latest when the wait's deadline passes (a dispatcher that does not
-- rejoin by then is presumed gone).

local function version_of(key)
  local raw = redis.call('GET', key)
  if raw then
    return tonumber(string.match(raw, '^(%d+):'))
  end
  return 0
end

-- The serving process's run id, read with INFO once per Lua VM and kept in this library's
-- upvalue. The VM lives exactly as long as the process: a restarted server, or another node
-- that took over (a promoted replica, a slot's new owner), runs a VM of its own that loads the
-- library afresh, so its first call reads its own run id. The fence therefore still catches a
-- restart or a failover on the first write, without an INFO (about 4 KB of text to build and
-- scan) on every call. A reloaded library (FUNCTION LOAD REPLACE) starts empty and reads again.
local cached_run_id = nil
local function run_id()
  if not cached_run_id then
    cached_run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  end
  return cached_run_id
end

local function read_epoch(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  local e, rid, at, found, wait_until, pending = string.match(raw, '^(%d+):(%x+):(%d+):?(%d*):?(%d*):?([%w,._-]*)$')
  local g = {epoch = tonumber(e), rid = rid, at = tonumber(at), found = tonumber(found) or 0,
             wait_until = tonumber(wait_until) or 0, pending = {}}
  for id in string.gmatch(pending or '', '[^,]+') do
    g.pending[id] = true
  end
  return g
end

-- How many dispatchers epoch `g` waits for.
local function waiting(g)
  local n = 0
  for _ in pairs(g.pending) do
    n = n + 1
  end
  return n
end

local function write_epoch(key, g)
  local ids = {}
  for id in pairs(g.pending) do
    table.insert(ids, id)
  end
  table.sort(ids)
  redis.call('SET', key, g.epoch .. ':' .. g.rid .. ':' .. g.at .. ':' .. g.found .. ':' .. g.wait_until .. ':'
    .. table.concat(ids, ','))
end

-- Whether writes of epoch `g` still wait for dispatchers to rejoin at `now`.
local function waits(g, now)
  return next(g.pending) ~= nil and tonumber(now) < g.wait_until
end

-- Raises FENCED unless a writer of `epoch` may write; with `now` (a write that is not a
-- restore), RECONCILING while the epoch waits for dispatchers to rejoin.
local function fence(epoch_key, epoch, now)
  local g = read_epoch(epoch_key)
  if not g or g.rid ~= run_id() then
    error({err = 'FENCED the store restarted since this dispatcher joined its epoch'})
  end
  if g.epoch ~= tonumber(epoch) then
    error({err = 'FENCED the store moved to epoch ' .. g.epoch})
  end
  if now and waits(g, now) then
    error({err = 'RECONCILING waiting for ' .. waiting(g) .. ' dispatcher(s) to rejoin after the store changed'})
  end
  return g
end

-- Dispatchers seen within `ttl` ms of `now` (`members`); older entries are dropped.
local function alive(members_key, now, ttl)
  local out = {}
  local raw = redis.call('HGETALL', members_key)
  for i = 1, #raw, 2 do
    local seen = tonumber(raw[i + 1]) or 0
    if seen >= now - ttl then
      table.insert(out, raw[i])
    elseif seen < now - 100 * ttl then
      redis.call('HDEL', members_key, raw[i])
    end
  end
  return out
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

-- KEYS: case, agent, agents, live, offers, timers, counters, log, epoch, seq, segment bucket
-- ARGV[1]: JSON {c = record meta | absent, a = record meta | absent, t = [[member, due]],
--                x = [member] to disarm first | absent, n = [[name, delta]], max = log length,
--                g = [[field, delta]] | absent, gx = the segment bucket's time to live, ms}; a record's meta is
--                {k, id, exp = the version it must have now, v = the version it is written at,
--                 live and offers for a case} (the writer decides both; nothing is computed here)
-- ARGV[2]: the case's JSON, ARGV[3]: the agent's JSON
-- ARGV[4]: the writer's epoch, ARGV[5]: now (ms, the writer's store clock)
-- Returns {1, high-water mark, counter name, total, ...} when written (the counters it moved,
-- with their new totals), {0, 'case' | 'agent'} when a version did not match (nothing written).
local function commit(keys, args)
  fence(keys[9], args[4], args[5])
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
  for _, x in ipairs(m['x'] or {}) do
    redis.call('ZREM', keys[6], x)
  end
  for _, t in ipairs(m['t']) do
    redis.call('ZADD', keys[6], t[2], t[1])
  end
  local out = {1, seq}
  for _, n in ipairs(m['n']) do
    table.insert(out, n[1])
    table.insert(out, redis.call('HINCRBY', keys[7], n[1], n[2]))
  end
  if m['g'] then
    for _, g in ipairs(m['g']) do
      redis.call('HINCRBY', keys[11], g[1], g[2])
    end
    redis.call('PEXPIRE', keys[11], m['gx'])
  end
  return out
end

-- KEYS: state, epoch   ARGV: expected version (0: absent), body, epoch, now
-- A shared state record ("<version>:<body>"), written only over the expected version: the
-- dispatcher whose write wins does what the state records (a call-in round). 1 if written.
local function put_state(keys, args)
  fence(keys[2], args[3], args[4])
  local v = version_of(keys[1])
  if v ~= tonumber(args[1]) then
    return 0
  end
  redis.call('SET', keys[1], (v + 1) .. ':' .. args[2])
  return 1
end

-- KEYS: agent, agents, log, epoch, seq   ARGV: expected version, id, log length, epoch, now
local function remove_agent(keys, args)
  fence(keys[4], args[4], args[5])
  if version_of(keys[1]) ~= tonumber(args[1]) then
    return 0
  end
  redis.call('DEL', keys[1])
  redis.call('ZREM', keys[2], args[2])
  log(keys[3], args[3], 'a', args[2], 0, redis.call('INCR', keys[5]))
  return 1
end

-- KEYS: timers, epoch   ARGV: member, due, epoch, now. Disarms the timer only if it is still due
-- at `due`.
local function clear_timer(keys, args)
  fence(keys[2], args[3], args[4])
  local due = redis.call('ZSCORE', keys[1], args[1])
  if due and tonumber(due) == tonumber(args[2]) then
    redis.call('ZREM', keys[1], args[1])
    return 1
  end
  return 0
end

-- KEYS: case, live, offers, log, epoch, seq   ARGV: case id, JSON list of offer ids, log length,
-- epoch, now. Deletes the case only if it is no longer live.
local function purge_case(keys, args)
  fence(keys[5], args[4], args[5])
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

-- KEYS: epoch, seq, members   ARGV: the epoch the caller knew (0: none), now (ms, store clock),
-- the highest high-water mark the caller saw written, the caller's dispatcher id, how long a new
-- epoch waits for dispatchers at most (ms), how lately a member must have been seen to be waited
-- for (ms), the comma-separated peers the caller remembers.
-- Joins the current epoch, beginning a new one if the server is not the one it began on, or if
-- this caller saw writes the server no longer has (its mark is behind the caller's). Only the
-- latter opens a reconcile window. A new epoch waits for the members seen lately and the
-- caller's peers (see the header); joining an epoch that lost nothing checks the caller in,
-- after a loss its restore does (`dispatch_checked_in`). Returns {epoch, began at (0: no window:
-- nothing was lost), the mark the server had when the loss was found, dispatchers waited for}.
local function join_epoch(keys, args)
  local rid = run_id()
  local g = read_epoch(keys[1])
  local found = high_water(keys[2])
  local now = tonumber(args[2])
  local me = args[4]
  local lost = tonumber(args[3]) > found
  redis.call('HSET', keys[3], me, now)
  if g and g.rid == rid and not lost then
    if g.at == 0 and g.pending[me] then
      g.pending[me] = nil
      write_epoch(keys[1], g)
    end
    return {g.epoch, g.at, g.found, waits(g, now) and waiting(g) or 0}
  end
  local e = {epoch = math.max(g and g.epoch or 0, tonumber(args[1])) + 1, rid = rid, at = 0, found = 0,
             wait_until = now + tonumber(args[5]), pending = {}}
  if lost then
    e.at = now
    e.found = found
  end
  for _, id in ipairs(alive(keys[3], now, tonumber(args[6]))) do
    e.pending[id] = true
  end
  for id in string.gmatch(args[7], '[^,]+') do
    e.pending[id] = true
  end
  -- After a loss the joiner too is waited for, until its restore is in.
  e.pending[me] = lost or nil
  write_epoch(keys[1], e)
  return {e.epoch, e.at, e.found, waiting(e)}
end

-- KEYS: epoch   ARGV: the caller's epoch, its dispatcher id. After a loss: the caller has put
-- back what it knows; the epoch stops waiting for it. Returns how many it still waits for.
local function checked_in(keys, args)
  local g = fence(keys[1], args[1])
  if g.pending[args[2]] then
    g.pending[args[2]] = nil
    write_epoch(keys[1], g)
  end
  return waiting(g)
end

-- KEYS: members   ARGV: dispatcher id. The dispatcher leaves (a graceful shutdown): no epoch
-- waits for it.
local function leave(keys, args)
  redis.call('HDEL', keys[1], args[1])
  return 1
end

-- KEYS: epoch   ARGV: now (optional). Returns {epoch (0: none), 1 if the server restarted since
-- it began, how many dispatchers writes still wait for at `now`}.
local function epoch_status(keys, args)
  local g = read_epoch(keys[1])
  if not g then
    return {0, 1, 0}
  end
  if g.rid ~= run_id() then
    return {g.epoch, 1, 0}
  end
  if args[1] and waits(g, args[1]) then
    return {g.epoch, 0, waiting(g)}
  end
  return {g.epoch, 0, 0}
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

-- KEYS: epoch, members   ARGV: the caller's epoch, now, its dispatcher id, how lately a member
-- must have been seen to count (ms). A write's checks without its writes: the Functions are
-- loaded, the server is the one the epoch began on, it waits for no dispatcher, and it takes
-- writes (under maxmemory with noeviction Redis refuses a Function that may write: OOM).
-- Readiness probes call it; it also notes the caller as seen, and returns the members seen
-- lately.
local function probe(keys, args)
  fence(keys[1], args[1], args[2])
  redis.call('HSET', keys[2], args[3], args[2])
  return alive(keys[2], tonumber(args[2]), tonumber(args[4]))
end

-- KEYS: weights log. ARGV: the weights as text, the change as JSON, how many to keep.
-- Appends unless the latest entry has the same weights; 1 if appended.
local function log_weights(keys, args)
  local last = redis.call('LINDEX', keys[1], -1)
  if last and string.sub(last, 1, #args[1] + 1) == args[1] .. '\t' then
    return 0
  end
  redis.call('RPUSH', keys[1], args[1] .. '\t' .. args[2])
  redis.call('LTRIM', keys[1], -tonumber(args[3]), -1)
  return 1
end

redis.register_function('dispatch_commit', commit)
redis.register_function('dispatch_log_weights', log_weights)
redis.register_function('dispatch_probe', probe)
redis.register_function('dispatch_join_epoch', join_epoch)
redis.register_function('dispatch_checked_in', checked_in)
redis.register_function('dispatch_leave', leave)
redis.register_function{function_name = 'dispatch_epoch', callback = epoch_status, flags = {'no-writes'}}
redis.register_function('dispatch_restore', restore)
redis.register_function('dispatch_remove_agent', remove_agent)
redis.register_function('dispatch_put_state', put_state)
redis.register_function('dispatch_clear_timer', clear_timer)
redis.register_function('dispatch_purge_case', purge_case)
