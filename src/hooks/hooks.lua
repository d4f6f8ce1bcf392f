#!lua name=herald_hooks
-- SPDX-License-Identifier: MIT
--
-- hooks.lua: the Redis Function library of herald's webhook sender (src/hooks/durable.c), Redis
-- 7+. Every herald node with webhooks and Redis loads it on its hooks connection (FUNCTION LOAD
-- REPLACE); it is compiled into the binary from this file. Pending deliveries and dead letters
-- live here, so any node delivers what any node queued, and a node that dies mid-delivery loses
-- nothing: its entries stay pending in the group and another node claims them.
--
-- Keys, for a prefix P (redis_prefix) and an endpoint NAME (its name=, [A-Za-z0-9._-]):
--
--   P hk:q:NAME   stream  events ready to be attempted, consumer group "herald" (every node
--                         reads with its own consumer name). Fields: e event id, t type,
--                         c created (wall ms), a attempts so far, f first attempt (wall ms, 0:
--                         none yet), b the body. An entry leaves the stream (XACK and XDEL)
--                         when it is delivered, waits for a retry, or becomes a dead letter.
--   P hk:w:NAME   zset    events waiting for a retry: score the wall ms it is due, member the
--                         entry's fields as a JSON object {e, t, c, a, f, b}. herald_hk_take
--                         moves the due ones back into the stream.
--   P hk:pev      stream  presence joins and leaves for member.* webhooks, written by
--                         herald.lua's presence functions while P hk:members exists (a node
--                         with such a webhook sets it at connect): k "~j" or "~l", c the
--                         channel, d {"member":..,"conn":..}; group "herald" as the queues.
--   P hk:dl       stream  dead letters of every endpoint, oldest first, at most
--                         webhook_dead_letters (XADD MAXLEN): fields n endpoint, e, t, c, a,
--                         x when it died (wall ms), r the reason, b the body.
--   P hk:dlc      hash    endpoint name -> its dead letters in P hk:dl (for /metrics), kept by
--                         every function that adds or removes one; herald_hk_dcount counts
--                         them again from P hk:dl when the sum is not XLEN P hk:dl (a stream
--                         written before the hash existed, or trimmed by hand)
--
--   P nc:<node>   hash    the notify hook's records (src/hooks/notify_rec.c): conn -> {"transport",
--                         "sub","client_ip","channels"} of each stream of the node the backend
--                         was told of and not yet told the end of
--   P ncn         set     nodes with such records
--   P pnodes      zset    the nodes' presence leases (herald.lua, renewed by the broker's bridge):
--                         node -> when its lease runs out (wall ms); read here, created (NX)
--                         when a node's first record comes before its bridge's first renewal
--   P hk:nev      stream  records of dead nodes, claimed: n node, c conn, d record, x when
--                         claimed (wall ms); group "herald" as the queues; at most 100000
--
-- An endpoint's pending events are XLEN P hk:q:NAME + ZCARD P hk:w:NAME, bounded by
-- webhook_queue_size: one more is a dead letter at once (reason "queue full").
--
-- Functions:
--   FCALL herald_hk_add 3 Q W DL <max pending> <max dead> <name> <e> <t> <c> <b>
--                                                      -> 1 queued, 0 a dead letter (full)
--   FCALL herald_hk_take 3 Q W DL <consumer> <count> <claim idle ms or 0> <now ms>
--     -> {pending, dead letters, id1, e, t, c, a, f, b, id2, ...}: first the waiting retries
--     that are due go back into Q, then (claim idle > 0) entries pending for another consumer
--     longer than claim idle are claimed (XAUTOCLAIM), then new ones are read (XREADGROUP >),
--     at most <count> entries in all.
--   FCALL herald_hk_done 1 Q <id>                        -> 1, or 0 when not pending
--   FCALL herald_hk_retry 2 Q W <id> <due ms> <attempts> <first ms>
--                                                      -> 1, or 0 when not pending
--   FCALL herald_hk_bury 2 Q DL <id> <name> <reason> <attempts> <now ms> <max dead>
--                                                      -> 1, or 0 when not pending
--   FCALL herald_hk_dlist 1 DL <name or ""> <event id or ""> <limit> <with body 0|1>
--     -> {total (of name, or all), id1, n, e, t, c, a, x, r, b or its length, id2, ...}
--   FCALL herald_hk_requeue 3 DL Q W <dead letter id> <max pending>
--                                                      -> 1 queued, 0 full, -1 gone
--   FCALL herald_hk_purge 1 DL <name or ""> <event id or "">  -> dead letters removed
--   FCALL herald_hk_dcount 1 DL <name1> <name2> ...   -> {dead letters of name1, ...}
--     (from P hk:dlc, the DL key's name plus "c")
--   FCALL herald_hk_ptake 1 PEV <consumer> <count> <claim idle ms or 0>
--     -> {id1, k, c, d, id2, ...}: presence events (P hk:pev, written by herald.lua's presence
--     functions while P hk:members exists) for member.added / member.removed, read through the
--     group "herald" like the queues (claimed from a dead node likewise)
--   FCALL herald_hk_pdone 1 PEV <id>                     -> 1, or 0 when not pending
--     (also for P hk:nev's entries)
--   FCALL herald_hk_nset 3 NC NCN PNODES <node> <lease ms> <conn> <record>
--     -> 1, or 0 when the node was not in NCN (new, or its records were claimed as a dead
--     node's: the caller syncs again)
--   FCALL herald_hk_ndel 1 NC <conn>                      -> 1, or 0 when not there
--   FCALL herald_hk_nsync 3 NC NCN PNODES <node> <lease ms> <replace 0|1> <conn1> <rec1> ..
--     -> as herald_hk_nset; replace 1 drops the node's records first (the first chunk)
--   FCALL herald_hk_ntake 3 NCN PNODES NEV <node> <prefix> <count> <claim idle ms or 0>
--     -> {id1, n, c, d, x, id2, ...}: first the records of every other node in NCN whose lease
--     is gone or ran out move to NEV (at most about 1000 a call; the node leaves NCN when it has
--     none left), atomically, so exactly one caller claims each; then entries of NEV pending
--     for another consumer longer than claim idle are claimed, then new ones read, at most
--     <count> in all
--
-- Endpoints registered through the admin API (src/hooks/registry.c), shared by every node:
--
--   P hk:eps      hash    id -> the registration (JSON, as POST /admin/webhooks completed it:
--                         id, url, channels, events, secret)
--   P hk:off      hash    endpoint name -> why it is disabled (410 Gone, webhook_disable_after):
--                         disabled on every node until enabled through the admin API (conf
--                         endpoints too)
--   P hk:ver      string  incremented by every change of the two: each node reads it every
--                         200 ms and, when it moved, both hashes
--
--   FCALL herald_hk_reg 3 VER EPS OFF <id> <registration> <max>
--                                                      -> 1 stored, 0 the id is taken, -1 full
--   FCALL herald_hk_unreg 5 VER EPS OFF Q W <id>       -> 1 deleted (its queue too), 0 none
--   FCALL herald_hk_forget 3 EPS Q W <id>              -> 1 when the id is not registered
--     (its queue and retries deleted: a node that still took from it after the delete made the
--     stream again; each node calls it once it forgot the endpoint), 0 when it is again
--   FCALL herald_hk_state 2 VER OFF <name> <reason, "" to enable>  -> 1 changed, 0 as it was
--   FCALL herald_hk_regs 3 VER EPS OFF <version known> -> {version} when it is that one, else
--     {version, {id1, registration1, ...}, {name1, reason1, ...}}
--
-- "not pending" means another node already finished the entry (it was claimed from this one):
-- nothing is done twice.

local GROUP = 'herald'
local SCAN = 1000

local function ensure_group(q)
    redis.pcall('XGROUP', 'CREATE', q, GROUP, '0', 'MKSTREAM')
end

local function fields(kv)
    local f = {}
    for i = 1, #kv, 2 do
        f[kv[i]] = kv[i + 1]
    end
    return f
end

local function pending(q, w)
    return redis.call('XLEN', q) + redis.call('ZCARD', w)
end

-- P hk:dlc of the dead letters P hk:dl (the key's name plus "c"): name's count moved by by.
local function dcount_add(dl, name, by)
    if redis.call('HINCRBY', dl .. 'c', name, by) <= 0 then
        redis.call('HDEL', dl .. 'c', name)
    end
end

-- Removes dead letter id (of endpoint name) from P hk:dl and its count from P hk:dlc: true
-- when it was there (a dead letter is counted while it is in the stream, no longer).
local function drop_dead(dl, id, name)
    if redis.call('XDEL', dl, id) == 0 then
        return false
    end
    dcount_add(dl, name or '', -1)
    return true
end

-- Calls visit(id, fields) for each dead letter in P hk:dl, oldest first, read SCAN at a time;
-- visit may remove the one it is given.
local function each_dead(dl, visit)
    local from = '-'
    while true do
        local page = redis.call('XRANGE', dl, from, '+', 'COUNT', SCAN)
        for _, e in ipairs(page) do
            visit(e[1], fields(e[2]))
        end
        if #page < SCAN then
            return
        end
        from = '(' .. page[#page][1]
    end
end

local function dead(dl, name, f, attempts, now, reason, maxdead)
    if tonumber(maxdead) <= 0 then
        return
    end
    -- the oldest go first (what XADD MAXLEN would trim), their endpoints' counts with them
    local over = redis.call('XLEN', dl) - tonumber(maxdead) + 1
    if over > 0 then
        for _, e in ipairs(redis.call('XRANGE', dl, '-', '+', 'COUNT', over)) do
            drop_dead(dl, e[1], fields(e[2]).n)
        end
    end
    dcount_add(dl, name, 1)
    redis.call('XADD', dl, 'MAXLEN', maxdead, '*', 'n', name, 'e', f.e or '', 't', f.t or '',
        'c', f.c or '0', 'a', attempts, 'x', now, 'r', reason, 'b', f.b or '')
end

local function herald_hk_add(keys, args)
    local q, w, dl = keys[1], keys[2], keys[3]
    local maxq, maxdead, name = tonumber(args[1]), args[2], args[3]
    local f = {e = args[4], t = args[5], c = args[6], b = args[7]}
    if redis.call('EXISTS', q) == 0 then
        ensure_group(q)
    end
    if pending(q, w) >= maxq then
        dead(dl, name, f, '0', args[6], 'queue full (webhook_queue_size): not attempted', maxdead)
        return 0
    end
    redis.call('XADD', q, '*', 'e', f.e, 't', f.t, 'c', f.c, 'a', '0', 'f', '0', 'b', f.b)
    return 1
end

local function push_entry(out, id, kv)
    local f = fields(kv)
    if not (f.e and f.t and f.c and f.a and f.f and f.b) then
        return false
    end
    out[#out + 1] = id
    out[#out + 1] = f.e
    out[#out + 1] = f.t
    out[#out + 1] = f.c
    out[#out + 1] = f.a
    out[#out + 1] = f.f
    out[#out + 1] = f.b
    return true
end

local function herald_hk_take(keys, args)
    local q, w, dl = keys[1], keys[2], keys[3]
    local consumer, count, idle, now = args[1], tonumber(args[2]), args[3], args[4]
    ensure_group(q)
    local due = redis.call('ZRANGE', w, '-inf', now, 'BYSCORE', 'LIMIT', 0, 100)
    for _, m in ipairs(due) do
        local ok, f = pcall(cjson.decode, m)
        if ok and type(f) == 'table' then
            redis.call('XADD', q, '*', 'e', tostring(f.e), 't', tostring(f.t), 'c', tostring(f.c),
                'a', tostring(f.a), 'f', tostring(f.f), 'b', tostring(f.b))
        end
        redis.call('ZREM', w, m)
    end
    local out = {pending(q, w), redis.call('XLEN', dl)}
    local n = 0
    if tonumber(idle) > 0 and count > 0 then
        local r = redis.call('XAUTOCLAIM', q, GROUP, consumer, idle, '0-0', 'COUNT', count)
        for _, e in ipairs(r[2]) do
            if e[2] and push_entry(out, e[1], e[2]) then
                n = n + 1
            elseif e[1] then
                redis.call('XACK', q, GROUP, e[1])
                redis.call('XDEL', q, e[1])
            end
        end
    end
    if count - n > 0 then
        local r = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', count - n,
            'STREAMS', q, '>')
        if r and r[1] then
            for _, e in ipairs(r[1][2]) do
                if not push_entry(out, e[1], e[2]) then
                    redis.call('XACK', q, GROUP, e[1])
                    redis.call('XDEL', q, e[1])
                end
            end
        end
    end
    return out
end

local function herald_hk_done(keys, args)
    local n = redis.call('XACK', keys[1], GROUP, args[1])
    redis.call('XDEL', keys[1], args[1])
    return n
end

local function take_entry(q, id)
    local r = redis.call('XRANGE', q, id, id)
    if not r[1] or redis.call('XACK', q, GROUP, id) == 0 then
        return nil
    end
    redis.call('XDEL', q, id)
    return fields(r[1][2])
end

local function herald_hk_retry(keys, args)
    local f = take_entry(keys[1], args[1])
    if not f then
        return 0
    end
    f.a = args[3]
    f.f = args[4]
    redis.call('ZADD', keys[2], args[2], cjson.encode(f))
    return 1
end

local function herald_hk_bury(keys, args)
    local f = take_entry(keys[1], args[1])
    if not f then
        return 0
    end
    dead(keys[2], args[2], f, args[4], args[5], args[3], args[6])
    return 1
end

local function herald_hk_dlist(keys, args)
    local dl, name, eid, limit, body = keys[1], args[1], args[2], tonumber(args[3]), args[4]
    local out = {0}
    local total, n = 0, 0
    each_dead(dl, function(id, f)
        if (name == '' or f.n == name) and (eid == '' or f.e == eid) then
            total = total + 1
            if n < limit then
                n = n + 1
                local b = f.b or ''
                if body ~= '1' then
                    b = tostring(#b)
                end
                for _, v in ipairs({id, f.n or '', f.e or '', f.t or '', f.c or '0', f.a or '0',
                                    f.x or '0', f.r or '', b}) do
                    out[#out + 1] = v
                end
            end
        end
    end)
    out[1] = total
    return out
end

local function herald_hk_requeue(keys, args)
    local dl, q, w = keys[1], keys[2], keys[3]
    local r = redis.call('XRANGE', dl, args[1], args[1])
    if not r[1] then
        return -1
    end
    if redis.call('EXISTS', q) == 0 then
        ensure_group(q)
    end
    if pending(q, w) >= tonumber(args[2]) then
        return 0
    end
    local f = fields(r[1][2])
    redis.call('XADD', q, '*', 'e', f.e or '', 't', f.t or '', 'c', f.c or '0', 'a', '0', 'f',
        '0', 'b', f.b or '')
    drop_dead(dl, args[1], f.n)
    return 1
end

local function herald_hk_purge(keys, args)
    local dl, name, eid = keys[1], args[1], args[2]
    if name == '' and eid == '' then
        local n = redis.call('XLEN', dl)
        redis.call('DEL', dl, dl .. 'c')
        return n
    end
    local gone = 0
    each_dead(dl, function(id, f)
        if (name == '' or f.n == name) and (eid == '' or f.e == eid) and
                drop_dead(dl, id, f.n) then
            gone = gone + 1
        end
    end)
    return gone
end

local function herald_hk_dcount(keys, args)
    local dl = keys[1]
    local dlc, sum = dl .. 'c', 0
    for _, v in ipairs(redis.call('HVALS', dlc)) do
        sum = sum + tonumber(v)
    end
    if sum ~= redis.call('XLEN', dl) then
        redis.call('DEL', dlc)
        each_dead(dl, function(_, f)
            redis.call('HINCRBY', dlc, f.n or '', 1)
        end)
    end
    local out = {}
    for i, name in ipairs(args) do
        out[i] = tonumber(redis.call('HGET', dlc, name) or 0) or 0
    end
    return out
end

-- Up to count entries of stream q for consumer: first those idle over idle ms under another
-- consumer (idle 0: none), then new ones; each as its id and the values of names, flat. An
-- entry missing one of names is acknowledged and deleted.
local function take(q, consumer, count, idle, names)
    local out, n = {}, 0
    local function push(e)
        local f = fields(e[2])
        local row = {e[1]}
        for _, k in ipairs(names) do
            if not f[k] then
                redis.call('XACK', q, GROUP, e[1])
                redis.call('XDEL', q, e[1])
                return false
            end
            row[#row + 1] = f[k]
        end
        for _, v in ipairs(row) do
            out[#out + 1] = v
        end
        return true
    end
    if tonumber(idle) > 0 then
        local r = redis.call('XAUTOCLAIM', q, GROUP, consumer, idle, '0-0', 'COUNT', count)
        for _, e in ipairs(r[2]) do
            if e[2] and push(e) then
                n = n + 1
            end
        end
    end
    if count - n > 0 then
        local r = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', count - n,
            'STREAMS', q, '>')
        if r and r[1] then
            for _, e in ipairs(r[1][2]) do
                push(e)
            end
        end
    end
    return out
end

local function herald_hk_ptake(keys, args)
    local pev, consumer, count, idle = keys[1], args[1], tonumber(args[2]), args[3]
    ensure_group(pev)
    return take(pev, consumer, count, idle, {'k', 'c', 'd'})
end

local function herald_hk_reg(keys, args)
    if redis.call('HEXISTS', keys[2], args[1]) == 1 then
        return 0
    end
    if redis.call('HLEN', keys[2]) >= tonumber(args[3]) then
        return -1
    end
    redis.call('HSET', keys[2], args[1], args[2])
    redis.call('HDEL', keys[3], args[1])
    redis.call('INCR', keys[1])
    return 1
end

local function herald_hk_unreg(keys, args)
    if redis.call('HDEL', keys[2], args[1]) == 0 then
        return 0
    end
    redis.call('HDEL', keys[3], args[1])
    redis.call('DEL', keys[4], keys[5])
    redis.call('INCR', keys[1])
    return 1
end

local function herald_hk_forget(keys, args)
    if redis.call('HEXISTS', keys[1], args[1]) == 1 then
        return 0
    end
    redis.call('DEL', keys[2], keys[3])
    return 1
end

local function herald_hk_state(keys, args)
    if args[2] == '' then
        if redis.call('HDEL', keys[2], args[1]) == 0 then
            return 0
        end
    else
        if redis.call('HGET', keys[2], args[1]) == args[2] then
            return 0
        end
        redis.call('HSET', keys[2], args[1], args[2])
    end
    redis.call('INCR', keys[1])
    return 1
end

local function herald_hk_regs(keys, args)
    local v = redis.call('GET', keys[1]) or '0'
    if v == args[1] then
        return {v}
    end
    return {v, redis.call('HGETALL', keys[2]), redis.call('HGETALL', keys[3])}
end

redis.register_function('herald_hk_reg', herald_hk_reg)
redis.register_function('herald_hk_unreg', herald_hk_unreg)
redis.register_function('herald_hk_state', herald_hk_state)
redis.register_function('herald_hk_forget', herald_hk_forget)
redis.register_function{function_name = 'herald_hk_regs', callback = herald_hk_regs,
    flags = {'no-writes', 'allow-oom'}}

-- ---- the notify hook's records (src/hooks/notify_rec.c) ----

local NEV_MAX = '100000'
local REAP = 1000

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function nrec_node(ncn, pn, node, lease)
    redis.call('SADD', ncn, node)
    redis.call('ZADD', pn, 'NX', string.format('%d', now_ms() + tonumber(lease)), node)
end

local function herald_hk_nset(keys, args)
    local known = redis.call('SISMEMBER', keys[2], args[1])
    redis.call('HSET', keys[1], args[3], args[4])
    nrec_node(keys[2], keys[3], args[1], args[2])
    return known
end

local function herald_hk_ndel(keys, args)
    return redis.call('HDEL', keys[1], args[1])
end

local function herald_hk_nsync(keys, args)
    local known = redis.call('SISMEMBER', keys[2], args[1])
    if args[3] == '1' then
        redis.call('DEL', keys[1])
    end
    for i = 4, #args - 1, 2 do
        redis.call('HSET', keys[1], args[i], args[i + 1])
    end
    nrec_node(keys[2], keys[3], args[1], args[2])
    return known
end

local function herald_hk_ntake(keys, args)
    local ncn, pn, nev = keys[1], keys[2], keys[3]
    local node, p, count, idle = args[1], args[2], tonumber(args[3]), args[4]
    local now = now_ms()
    ensure_group(nev)
    local budget = REAP
    for _, d in ipairs(redis.call('SMEMBERS', ncn)) do
        if budget <= 0 then
            break
        end
        local till = redis.call('ZSCORE', pn, d)
        if d ~= node and (not till or tonumber(till) < now) then
            local nc = p .. 'nc:' .. d
            local cursor = '0'
            repeat
                local r = redis.call('HSCAN', nc, cursor, 'COUNT', 100)
                cursor = r[1]
                for i = 1, #r[2], 2 do
                    redis.call('XADD', nev, 'MAXLEN', '~', NEV_MAX, '*', 'n', d, 'c', r[2][i],
                        'd', r[2][i + 1], 'x', string.format('%d', now))
                    redis.call('HDEL', nc, r[2][i])
                    budget = budget - 1
                end
            until cursor == '0' or budget <= 0
            if redis.call('EXISTS', nc) == 0 then
                redis.call('SREM', ncn, d)
            end
        end
    end
    return take(nev, node, count, idle, {'n', 'c', 'd', 'x'})
end

redis.register_function('herald_hk_nset', herald_hk_nset)
redis.register_function('herald_hk_nsync', herald_hk_nsync)
redis.register_function('herald_hk_ntake', herald_hk_ntake)
-- Forgetting a record only frees memory: it works when Redis is out of memory too.
redis.register_function{function_name = 'herald_hk_ndel', callback = herald_hk_ndel,
    flags = {'allow-oom'}}
redis.register_function('herald_hk_ptake', herald_hk_ptake)
redis.register_function{function_name = 'herald_hk_pdone', callback = herald_hk_done,
    flags = {'allow-oom'}}
redis.register_function('herald_hk_add', herald_hk_add)
redis.register_function('herald_hk_take', herald_hk_take)
-- Finishing an entry only frees memory: it works when Redis is out of memory too.
redis.register_function{function_name = 'herald_hk_done', callback = herald_hk_done,
    flags = {'allow-oom'}}
redis.register_function('herald_hk_retry', herald_hk_retry)
redis.register_function('herald_hk_bury', herald_hk_bury)
redis.register_function{function_name = 'herald_hk_dlist', callback = herald_hk_dlist,
    flags = {'no-writes', 'allow-oom'}}
redis.register_function('herald_hk_requeue', herald_hk_requeue)
-- Counting writes only when the counts are off, a hash of one field an endpoint: it works when
-- Redis is out of memory too (no warning a second from every node then).
redis.register_function{function_name = 'herald_hk_dcount', callback = herald_hk_dcount,
    flags = {'allow-oom'}}
redis.register_function{function_name = 'herald_hk_purge', callback = herald_hk_purge,
    flags = {'allow-oom'}}
