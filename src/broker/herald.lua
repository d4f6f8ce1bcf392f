#!lua name=herald
-- SPDX-License-Identifier: MIT
--
-- herald.lua: herald's Redis Function library (Redis 7+). Every herald node loads it at connect
-- (FUNCTION LOAD REPLACE); it is compiled into the binary from this file. Ids and history live
-- in Redis, so every node (and any Redis client) publishes and resumes on the same sequence.
--
-- Keys, for a prefix P (the redis_prefix directive, "herald:" by default):
--
--   P meta          hash    epoch: id epoch (decimal ms of its creation); seq: the cluster-wide
--                           sequence. Lost with Redis's data, and then made again: a new epoch.
--   P conf          hash    history_size, history_ttl_ms, history_max_bytes, max_message_bytes,
--                           written by each herald node when it connects.
--   P ch:<channel>  stream  the channel's history: entry id "<epoch>-<seq>", fields t (publish
--                           time, ms), ct (content type), d (payload).
--   P chm:<channel> hash    epoch (of the stream's entries), trimmed (highest seq that left
--                           history), bytes (payload bytes in the stream), oldest (t of its
--                           first entry), last (the last id).
--   P tombs         hash    65536 slots by hash of a channel name: the last seq published on a
--                           channel, read when its keys have expired (all its messages then
--                           left history). A collision only makes a gap report cautious.
--
-- The stream and its chm hash expire history_ttl after the last publish, so idle channels cost
-- nothing. Pub/sub channel P msg:<channel> carries each message as
--   "<id>\n<time ms>\n<content type>\n<payload>"
-- to the nodes with subscribers on it.
--
-- Ids are "<epoch in base 36>-<seq>". A resume from an id of another epoch, or from below the
-- channel's trimmed seq, is a gap: some messages after it may be missing.
--
-- Functions (docs/redis.md has examples):
--   FCALL herald_publish 1 P ch:<channel> <channel> <payload> [<content type>]  -> id
--   FCALL herald_publish_batch N P ch:<c1> .. P ch:<cN> <c1> <p1> <t1> .. <cN> <pN> <tN>
--                                                                    -> {time ms, id1 .. idN}
--   FCALL herald_read 1 P ch:<channel> <channel> sub|hist|info <since id or ""> <limit>
--     -> {"<epoch>-<current seq>", gap, found, last id, history length, id, t, ct, d, ...}
--   FCALL herald_init 1 P conf <history_size> <history_ttl_ms> <history_max_bytes>
--                              <max_message_bytes>  -> {previous four values, "<epoch>-<seq>"}
-- Every write happens after every check, so a refused call changes nothing.

local DEFAULTS = {100, 3600000, 4194304, 1048576}
local SETTINGS = {'history_size', 'history_ttl_ms', 'history_max_bytes', 'max_message_bytes'}
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'
local N_TOMBS = 65536

local function fail(msg)
    error({err = 'ERR herald: ' .. msg})
end

local function int(n)
    return string.format('%d', n)
end

local function base36(n)
    local s = ''
    repeat
        local d = n % 36
        s = string.sub(B36, d + 1, d + 1) .. s
        n = (n - d) / 36
    until n == 0
    return s
end

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function check_channel(channel)
    if type(channel) ~= 'string' or #channel == 0 or #channel > 128 or
        not string.find(channel, '^[%w%._:@%-]+$') then
        fail('bad channel name: 1-128 characters of A-Z a-z 0-9 . _ - : @')
    end
end

local function check_content_type(ct)
    if type(ct) ~= 'string' or #ct > 127 or string.find(ct, '[\r\n]') then
        fail('bad content type: at most 127 bytes, no line breaks')
    end
end

-- The prefix P of a key P..suffix.
local function prefix_of(key, suffix)
    if type(key) ~= 'string' or #key < #suffix or string.sub(key, -#suffix) ~= suffix then
        fail('expected the key <prefix>' .. suffix .. ', got ' .. tostring(key))
    end
    return string.sub(key, 1, #key - #suffix)
end

local function settings(p)
    local v = redis.call('HMGET', p .. 'conf', unpack(SETTINGS))
    local s = {}
    for i = 1, 4 do
        s[i] = tonumber(v[i]) or DEFAULTS[i]
    end
    return {size = s[1], ttl = s[2], max_bytes = s[3], max_msg = s[4]}
end

-- The current epoch (decimal string), made on first use and after Redis lost its data.
local function epoch_of(p, now)
    local e = redis.call('HGET', p .. 'meta', 'epoch')
    if not e then
        e = int(now)
        redis.call('HSET', p .. 'meta', 'epoch', e)
        redis.call('DEL', p .. 'tombs')
    end
    return e
end

local function tomb_slot(channel)
    local h = 5381
    for i = 1, #channel do
        h = (h * 33 + string.byte(channel, i)) % N_TOMBS
    end
    return int(h)
end

local function fields(list)
    local f = {}
    for i = 1, #list, 2 do
        f[list[i]] = list[i + 1]
    end
    return f
end

local function seq_of(stream_id)
    return tonumber(string.match(stream_id, '%-(%d+)$'))
end

-- Channel state: from its chm hash when that belongs to this epoch, else a channel with no
-- history whose past is whatever its tomb says.
local function load_channel(p, key, cm, channel, epoch)
    local h = redis.call('HMGET', cm, 'epoch', 'trimmed', 'bytes', 'oldest', 'last')
    if h[1] == epoch then
        return {exists = true, len = redis.call('XLEN', key), trimmed = tonumber(h[2]) or 0,
                bytes = tonumber(h[3]) or 0, oldest = tonumber(h[4]) or 0, last = h[5] or ''}
    end
    local tomb = redis.call('HGET', p .. 'tombs', tomb_slot(channel))
    return {exists = false, len = 0, trimmed = tonumber(tomb) or 0, bytes = 0, oldest = 0,
            last = ''}
end

-- Drops the oldest entries while the channel is over a limit (count, bytes, age). Returns
-- whether it dropped any.
local function trim(key, st, cfg, now)
    local dropped = false
    while st.len > 0 and (st.len > cfg.size or st.bytes > cfg.max_bytes or
        (cfg.ttl > 0 and st.oldest < now - cfg.ttl)) do
        local e = redis.call('XRANGE', key, '-', '+', 'COUNT', 2)
        if not e[1] then
            st.len, st.bytes = 0, 0
            break
        end
        redis.call('XDEL', key, e[1][1])
        local seq = seq_of(e[1][1])
        if seq > st.trimmed then
            st.trimmed = seq
        end
        st.len = st.len - 1
        st.bytes = st.bytes - #(fields(e[1][2]).d or '')
        st.oldest = e[2] and tonumber(fields(e[2][2]).t) or now
        dropped = true
    end
    if st.len == 0 then
        st.bytes = 0
    end
    return dropped
end

local function save_channel(key, cm, st, epoch, cfg)
    redis.call('HSET', cm, 'epoch', epoch, 'trimmed', int(st.trimmed), 'bytes', int(st.bytes),
        'oldest', int(st.oldest), 'last', st.last)
    if cfg.ttl > 0 then
        redis.call('PEXPIRE', key, cfg.ttl)
        redis.call('PEXPIRE', cm, cfg.ttl)
    else
        redis.call('PERSIST', key)
        redis.call('PERSIST', cm)
    end
end

-- Publishes one checked message. Returns its id.
local function publish_one(p, cfg, now, epoch, e36, key, channel, payload, ct)
    local seq = redis.call('HINCRBY', p .. 'meta', 'seq', 1)
    local id = e36 .. '-' .. int(seq)
    local cm = p .. 'chm:' .. channel
    local st = load_channel(p, key, cm, channel, epoch)
    if not st.exists then
        redis.call('DEL', key) -- entries of another epoch, if any
    end
    redis.call('XADD', key, epoch .. '-' .. int(seq), 't', int(now), 'ct', ct, 'd', payload)
    if st.len == 0 then
        st.oldest = now
    end
    st.len = st.len + 1
    st.bytes = st.bytes + #payload
    st.last = id
    trim(key, st, cfg, now)
    save_channel(key, cm, st, epoch, cfg)
    redis.call('HSET', p .. 'tombs', tomb_slot(channel), int(seq))
    redis.call('PUBLISH', p .. 'msg:' .. channel,
        id .. '\n' .. int(now) .. '\n' .. ct .. '\n' .. payload)
    return id
end

local function check_message(cfg, channel, payload, ct)
    check_channel(channel)
    if type(payload) ~= 'string' then
        fail('expected a payload')
    end
    check_content_type(ct)
    if cfg.max_msg > 0 and #payload > cfg.max_msg then
        fail('message larger than max_message_size (' .. int(cfg.max_msg) .. ' bytes)')
    end
end

local function herald_publish(keys, args)
    if #keys ~= 1 or #args < 2 or #args > 3 then
        fail('usage: FCALL herald_publish 1 <prefix>ch:<channel> <channel> <payload> [<type>]')
    end
    local channel, payload, ct = args[1], args[2], args[3] or ''
    check_channel(channel)
    local p = prefix_of(keys[1], 'ch:' .. channel)
    local cfg = settings(p)
    check_message(cfg, channel, payload, ct)
    local now = now_ms()
    local epoch = epoch_of(p, now)
    return publish_one(p, cfg, now, epoch, base36(tonumber(epoch)), keys[1], channel, payload,
        ct)
end

local function herald_publish_batch(keys, args)
    if #keys == 0 or #args ~= 3 * #keys then
        fail('usage: FCALL herald_publish_batch N <key>.. (<channel> <payload> <type>)..')
    end
    local p
    for i = 1, #keys do
        check_channel(args[3 * i - 2])
        local q = prefix_of(keys[i], 'ch:' .. args[3 * i - 2])
        if p and q ~= p then
            fail('every key of a batch must have the same prefix')
        end
        p = q
    end
    local cfg = settings(p)
    for i = 1, #keys do
        check_message(cfg, args[3 * i - 2], args[3 * i - 1], args[3 * i])
    end
    local now = now_ms()
    local epoch = epoch_of(p, now)
    local e36 = base36(tonumber(epoch))
    local out = {int(now)}
    for i = 1, #keys do
        out[i + 1] = publish_one(p, cfg, now, epoch, e36, keys[i], args[3 * i - 2],
            args[3 * i - 1], args[3 * i])
    end
    return out
end

-- What a subscriber (sub), a poll (hist) or an introspection (info) needs, in one atomic read
-- with the current sequence: every message of the channel up to it is in the answer, was
-- trimmed (and the answer says so), or comes after it through pub/sub.
local function herald_read(keys, args)
    if #keys ~= 1 or #args ~= 4 then
        fail('usage: FCALL herald_read 1 <key> <channel> sub|hist|info <since> <limit>')
    end
    local key, channel, mode, since, limit = keys[1], args[1], args[2], args[3],
        tonumber(args[4]) or 0
    check_channel(channel)
    local p = prefix_of(key, 'ch:' .. channel)
    local since_e, since_s
    if since ~= '' then
        since_e, since_s = string.match(since, '^(%w+)%-(%d+)$')
        if not since_e or #since_s > 19 then
            fail('bad since id')
        end
    end
    local cfg = settings(p)
    local now = now_ms()
    local epoch = epoch_of(p, now)
    local e36 = base36(tonumber(epoch))
    local cur = tonumber(redis.call('HGET', p .. 'meta', 'seq')) or 0
    local cm = p .. 'chm:' .. channel
    local st = load_channel(p, key, cm, channel, epoch)
    if st.exists and trim(key, st, cfg, now) then
        save_channel(key, cm, st, epoch, cfg)
    end
    local gap = 0
    if since_e and (since_e ~= e36 or tonumber(since_s) < st.trimmed) then
        gap = 1
    end
    local out = {e36 .. '-' .. int(cur), gap, st.exists and 1 or 0, st.last, st.len}
    if not st.exists or st.len == 0 or mode == 'info' then
        return out
    end
    local entries = {}
    if since_e then
        local start = '-'
        if since_e == e36 then
            start = '(' .. epoch .. '-' .. since_s
        end
        if limit > 0 then
            entries = redis.call('XRANGE', key, start, '+', 'COUNT', limit)
        else
            entries = redis.call('XRANGE', key, start, '+')
        end
    elseif mode == 'hist' then
        entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    end
    for _, e in ipairs(entries) do
        local f = fields(e[2])
        out[#out + 1] = e36 .. '-' .. int(seq_of(e[1]))
        out[#out + 1] = f.t or '0'
        out[#out + 1] = f.ct or ''
        out[#out + 1] = f.d or ''
    end
    return out
end

local function herald_init(keys, args)
    if #keys ~= 1 or #args ~= 4 then
        fail('usage: FCALL herald_init 1 <prefix>conf <size> <ttl_ms> <max_bytes> <max_msg>')
    end
    local p = prefix_of(keys[1], 'conf')
    for i = 1, 4 do
        if not string.find(args[i], '^%d+$') then
            fail('expected numbers')
        end
    end
    local prev = redis.call('HMGET', keys[1], unpack(SETTINGS))
    redis.call('HSET', keys[1], SETTINGS[1], args[1], SETTINGS[2], args[2], SETTINGS[3], args[3],
        SETTINGS[4], args[4])
    local epoch = epoch_of(p, now_ms())
    local cur = tonumber(redis.call('HGET', p .. 'meta', 'seq')) or 0
    local out = {}
    for i = 1, 4 do
        out[i] = prev[i] or ''
    end
    out[5] = base36(tonumber(epoch)) .. '-' .. int(cur)
    return out
end

redis.register_function('herald_publish', herald_publish)
redis.register_function('herald_publish_batch', herald_publish_batch)
-- Reads only free memory (trimming) or write a few bytes (a new epoch, the settings): they keep
-- serving subscribers and polls when Redis is out of memory, where publishing is refused.
redis.register_function{function_name = 'herald_read', callback = herald_read,
    flags = {'allow-oom'}}
redis.register_function{function_name = 'herald_init', callback = herald_init,
    flags = {'allow-oom'}}
