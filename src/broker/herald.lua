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
--                           idempotency_window_ms, max_channels, written by each herald node
--                           when it connects.
--   P ch:<channel>  stream  the channel's history: entry id "<epoch>-<seq>", fields t (publish
--                           time, ms), ct (content type), d (payload), p (the publisher stamp,
--                           a JSON object herald set from a client's token; absent for none),
--                           r (the receipt tag "<node>-<conn>" of a message whose publisher
--                           asked delivery receipts; absent for none).
--   P chm:<channel> hash    epoch (of the stream's entries), trimmed (highest seq that left
--                           history), bytes (payload bytes in the stream), oldest (t of its
--                           first entry), last (the last id).
--   P tombs         hash    65536 slots by hash of a channel name: the last seq published on a
--                           channel, read when its keys have expired (all its messages then
--                           left history). A collision only makes a gap report cautious.
--   P chans         zset    the channels with history: member the name, score the time (ms) its
--                           keys expire (+inf: never). The channel budget (max_channels) counts
--                           the members with a score in the future; expired ones are removed a
--                           few at a time by the publishes.
--   P revoked       zset    live revocations (POST /admin/revoke): member "s:<sub>" or
--                           "j:<jti>", score the unix ms it ends; the key expires with the
--                           last of them. Expired members leave at the next revocation.
--   P idem:<channel>/<key>  string  the id a publish with that idempotency key got, for
--                           idempotency_window_ms: a publish with the same key on the same
--                           channel within the window returns this id and publishes nothing.
--   P hk:pev        stream  presence joins and leaves for webhooks, written only while
--                           P hk:members exists (a node with member.* webhooks sets it): fields
--                           k "~j" or "~l", c the channel, d {"member":..,"conn":..}; and
--                           channels occupied ("~o") or vacated ("~v", d "{}") for the whole
--                           cluster; about 10000 kept (src/hooks/hooks.lua reads them).
--   P oc:<channel>  set     the nodes with subscribers on the channel, P on:<node> the
--                           channels of a node, kept only by nodes with channel.* webhooks;
--                           a dead node's are dropped by herald_plive with its members.
--
-- The stream and its chm hash expire history_ttl after the last publish, so idle channels cost
-- nothing. Pub/sub channel P msg:<channel> carries each message as
--   "<id>\n<time ms>\n<content type>\n<publisher>\n<payload>"
-- to the nodes with subscribers on it; "<id> <receipt tag>" in the first line when it has one
-- (herald_read's ids too). P rc:<node> carries receipts to that node's publishers (the nodes
-- PUBLISH them, docs/redis.md).
--
-- Ids are "<epoch in base 36>-<seq>". A resume from an id of another epoch, or from below the
-- channel's trimmed seq, is a gap: some messages after it may be missing.
--
-- Functions (docs/redis.md has examples):
--   FCALL herald_publish 1 P ch:<channel> <channel> <payload> [<content type> [<idem key>
--                                                                    [<publisher>]]]
--                                                                    -> id
--   FCALL herald_publish_batch N P ch:<c1> .. P ch:<cN> <c1> <p1> <t1> .. <cN> <pN> <tN>
--                                                                    -> {time ms, id1 .. idN}
--     (or with a fourth argument per message, its idempotency key, "" for none:
--      <c1> <p1> <t1> <k1> .. <cN> <pN> <tN> <kN>; or a fifth too, its publisher stamp, a JSON
--      object or "": <c1> <p1> <t1> <k1> <s1> ..; or a sixth, its receipt tag or "")
--   FCALL herald_read 1 P ch:<channel> <channel> sub|hist|info <since id or ""> <limit>
--     -> {"<epoch>-<current seq>", gap, found, last id, history length, id, t, ct, p, d, ...}
--     At most <limit> (1..READ_MAX_MSGS) messages and about READ_MAX_BYTES of payload: hist
--     returns the oldest after since (the caller continues from the last), sub the newest (and
--     gap = 1 when older ones after since were left out).
--   FCALL herald_revoke 2 P revoked P ctl <member> <until ms> <now ms> <max> <announcement>
--     -> the number of nodes the announcement reached (PUBLISH P ctl). Refused with an error
--     "REVOCATIONS ..." when <max> live revocations are held and <member> is not one of them; a
--     member already there keeps the later of its two ends.
--   FCALL herald_init 1 P conf <history_size> <history_ttl_ms> <history_max_bytes>
--                              <max_message_bytes> [<idempotency_window_ms> <max_channels>]
--                                                   -> {previous values, "<epoch>-<seq>"}
-- Every write happens after every check, so a refused call changes nothing.

local DEFAULTS = {100, 3600000, 4194304, 1048576, 600000, 0}
local SETTINGS = {'history_size', 'history_ttl_ms', 'history_max_bytes', 'max_message_bytes',
                  'idempotency_window_ms', 'max_channels'}
local READ_MAX_MSGS = 1000
local READ_MAX_BYTES = 8388608
local PURGE_MAX = 64
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

-- RFC 9110 tchar: the bytes of a token (made on first use: a library being loaded may not
-- touch the string module).
local TCHAR
local function tchar_table()
    if not TCHAR then
        TCHAR = {}
        local chars = "!#$%&'*+-.^_`|~0123456789" ..
            'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
        for i = 1, #chars do
            TCHAR[string.byte(chars, i)] = true
        end
    end
    return TCHAR
end

-- The rules of hd_content_type_valid (src/pubsub/message.c): empty, or at most 127 bytes of
-- printable ASCII: type "/" subtype *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] ).
local function content_type_valid(ct)
    local len = #ct
    if len == 0 then
        return true
    end
    if len > 127 then
        return false
    end
    local b = string.byte
    local TCHAR = tchar_table()
    local function token(i)
        while i <= len and TCHAR[b(ct, i)] do
            i = i + 1
        end
        return i
    end
    local function ows(i)
        while i <= len and (b(ct, i) == 32 or b(ct, i) == 9) do
            i = i + 1
        end
        return i
    end
    local i = token(1)
    if i == 1 or i > len or b(ct, i) ~= 47 then
        return false
    end
    local j = token(i + 1)
    if j == i + 1 then
        return false
    end
    i = j
    while true do
        i = ows(i)
        if i > len then
            return true
        end
        if b(ct, i) ~= 59 then
            return false
        end
        i = ows(i + 1)
        if i <= len and b(ct, i) ~= 59 then
            j = token(i)
            if j == i or j > len or b(ct, j) ~= 61 then
                return false
            end
            i = j + 1
            if i <= len and b(ct, i) == 34 then
                i = i + 1
                while true do
                    if i > len then
                        return false
                    end
                    local c = b(ct, i)
                    if c == 34 then
                        break
                    end
                    if c == 92 then
                        i = i + 1
                        if i > len then
                            return false
                        end
                        c = b(ct, i)
                    end
                    if (c < 32 and c ~= 9) or c >= 127 then
                        return false
                    end
                    i = i + 1
                end
                i = i + 1
            else
                j = token(i)
                if j == i then
                    return false
                end
                i = j
            end
        end
    end
end

local function check_content_type(ct)
    if type(ct) ~= 'string' or not content_type_valid(ct) then
        fail('bad content type: a media type (type/subtype, token=value or token="quoted" ' ..
            'parameters) of at most 127 printable ASCII bytes')
    end
end

-- An idempotency key: "" (none), or 1-136 printable ASCII bytes without spaces (herald's
-- clients give 1-128; a batch item's "<key>#<index>" is a little longer).
local function check_idem_key(k)
    if type(k) ~= 'string' or #k > 136 or string.find(k, '[^\33-\126]') then
        fail('bad idempotency key: 1-136 printable ASCII characters, no spaces')
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
    for i = 1, #SETTINGS do
        s[i] = tonumber(v[i]) or DEFAULTS[i]
    end
    return {size = s[1], ttl = s[2], max_bytes = s[3], max_msg = s[4], window = s[5],
            max_channels = s[6]}
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
local function publish_one(p, cfg, now, epoch, e36, key, channel, payload, ct, stamp, tag)
    local seq = redis.call('HINCRBY', p .. 'meta', 'seq', 1)
    local id = e36 .. '-' .. int(seq)
    local cm = p .. 'chm:' .. channel
    local st = load_channel(p, key, cm, channel, epoch)
    if not st.exists then
        redis.call('DEL', key) -- entries of another epoch, if any
    end
    if tag ~= '' and stamp ~= '' then -- receipts asked (docs/chat.md): where they go
        redis.call('XADD', key, epoch .. '-' .. int(seq), 't', int(now), 'ct', ct, 'p', stamp,
            'r', tag, 'd', payload)
    elseif tag ~= '' then
        redis.call('XADD', key, epoch .. '-' .. int(seq), 't', int(now), 'ct', ct, 'r', tag,
            'd', payload)
    elseif stamp ~= '' then
        redis.call('XADD', key, epoch .. '-' .. int(seq), 't', int(now), 'ct', ct, 'p', stamp,
            'd', payload)
    else
        redis.call('XADD', key, epoch .. '-' .. int(seq), 't', int(now), 'ct', ct, 'd', payload)
    end
    if st.len == 0 then
        st.oldest = now
    end
    st.len = st.len + 1
    st.bytes = st.bytes + #payload
    st.last = id
    trim(key, st, cfg, now)
    save_channel(key, cm, st, epoch, cfg)
    redis.call('HSET', p .. 'tombs', tomb_slot(channel), int(seq))
    redis.call('ZADD', p .. 'chans', cfg.ttl > 0 and int(now + cfg.ttl) or '+inf', channel)
    redis.call('PUBLISH', p .. 'msg:' .. channel, id .. (tag ~= '' and ' ' .. tag or '') ..
        '\n' .. int(now) .. '\n' .. ct .. '\n' .. stamp .. '\n' .. payload)
    return id
end

-- A publisher stamp: "" (none) or a JSON object's text herald wrote (at most 8192 bytes; each
-- node checks it again before a client sees it).
local function check_stamp(s)
    if type(s) ~= 'string' or #s > 8192 or string.find(s, '\n', 1, true) or
        (s ~= '' and (string.sub(s, 1, 1) ~= '{' or string.sub(s, -1) ~= '}')) then
        fail('bad publisher stamp: a JSON object of at most 8192 bytes, or ""')
    end
end

-- A receipt tag: "" (none) or "<node>-<conn>" in lowercase hex (docs/chat.md).
local function check_tag(t)
    if type(t) ~= 'string' or #t > 40 or
        (t ~= '' and not string.find(t, '^[0-9a-f]+%-[0-9a-f]+$')) then
        fail('bad receipt tag: "<node>-<connection>" in hex, or ""')
    end
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

-- The idempotency record of (channel, key), or nil when the key is "" or idempotency is off.
local function idem_key_of(p, cfg, channel, k)
    if k == '' or cfg.window <= 0 then
        return nil
    end
    return p .. 'idem:' .. channel .. '/' .. k
end

-- Whether the channel counts against the budget now (it has unexpired keys).
local function channel_live(p, channel, now)
    local score = redis.call('ZSCORE', p .. 'chans', channel)
    return score and tonumber(score) > now
end

-- Refuses a call that would make more channels than max_channels (counted cluster-wide: the
-- channels whose keys have not expired). Removes a few expired entries first.
local function check_budget(p, cfg, now, channels)
    local z = p .. 'chans'
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. int(now), 'LIMIT', 0, PURGE_MAX)
    if #old > 0 then
        redis.call('ZREM', z, unpack(old))
    end
    if cfg.max_channels <= 0 then
        return
    end
    local new, seen = 0, {}
    for _, channel in ipairs(channels) do
        if not seen[channel] then
            seen[channel] = true
            if not channel_live(p, channel, now) then
                new = new + 1
            end
        end
    end
    if new > 0 and redis.call('ZCOUNT', z, '(' .. int(now), '+inf') + new > cfg.max_channels then
        fail('channel budget spent: max_channels (' .. int(cfg.max_channels) ..
            ') channels have history')
    end
end

-- Publishes the checked messages (each {channel, payload, type, key}) in order. Returns
-- {time ms, id ..}: a message whose idempotency key was seen within the window gets the id it
-- got then and is not published again.
local function publish_all(p, cfg, keys, msgs)
    local now = now_ms()
    local fresh = {}
    for i, m in ipairs(msgs) do
        local ik = idem_key_of(p, cfg, m[1], m[4])
        m.ik = ik
        m.prev = ik and redis.call('GET', ik)
        if not m.prev then
            fresh[#fresh + 1] = m[1]
        end
    end
    check_budget(p, cfg, now, fresh)
    local epoch = epoch_of(p, now)
    local e36 = base36(tonumber(epoch))
    local out = {int(now)}
    for i, m in ipairs(msgs) do
        local id = m.ik and redis.call('GET', m.ik) -- an earlier message of this call
        if not id then
            id = publish_one(p, cfg, now, epoch, e36, keys[i], m[1], m[2], m[3], m[5], m[6])
            if m.ik then
                redis.call('SET', m.ik, id, 'PX', int(cfg.window))
            end
        end
        out[i + 1] = id
    end
    return out
end

local function herald_publish(keys, args)
    if #keys ~= 1 or #args < 2 or #args > 5 then
        fail('usage: FCALL herald_publish 1 <prefix>ch:<channel> <channel> <payload> [<type> ' ..
            '[<idempotency key> [<publisher>]]]')
    end
    local channel, payload, ct, k, s = args[1], args[2], args[3] or '', args[4] or '',
        args[5] or ''
    check_channel(channel)
    local p = prefix_of(keys[1], 'ch:' .. channel)
    local cfg = settings(p)
    check_message(cfg, channel, payload, ct)
    check_idem_key(k)
    check_stamp(s)
    return publish_all(p, cfg, keys, {{channel, payload, ct, k, s, ''}})[2]
end

local function herald_publish_batch(keys, args)
    local w = #keys > 0 and #args / #keys
    if w ~= 3 and w ~= 4 and w ~= 5 and w ~= 6 then
        fail('usage: FCALL herald_publish_batch N <key>.. (<channel> <payload> <type> ' ..
            '[<idempotency key> [<publisher> [<receipt tag>]]])..')
    end
    local p
    for i = 1, #keys do
        check_channel(args[w * i - w + 1])
        local q = prefix_of(keys[i], 'ch:' .. args[w * i - w + 1])
        if p and q ~= p then
            fail('every key of a batch must have the same prefix')
        end
        p = q
    end
    local cfg = settings(p)
    local msgs = {}
    for i = 1, #keys do
        local a = w * i - w
        local m = {args[a + 1], args[a + 2], args[a + 3], w >= 4 and args[a + 4] or '',
            w >= 5 and args[a + 5] or '', w == 6 and args[a + 6] or ''}
        check_message(cfg, m[1], m[2], m[3])
        check_idem_key(m[4])
        check_stamp(m[5])
        check_tag(m[6])
        msgs[i] = m
    end
    return publish_all(p, cfg, keys, msgs)
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
    if limit <= 0 or limit > READ_MAX_MSGS then
        limit = READ_MAX_MSGS
    end
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
    local start = '-'
    if since_e == e36 then
        start = '(' .. epoch .. '-' .. since_s
    end
    if since_e and mode == 'hist' then
        entries = redis.call('XRANGE', key, start, '+', 'COUNT', limit)
    elseif since_e then
        -- the newest: what follows comes live; what is left out is a gap
        entries = redis.call('XREVRANGE', key, '+', start, 'COUNT', limit + 1)
        if #entries > limit then
            entries[#entries] = nil
            out[2] = 1
        end
    elseif mode == 'hist' then
        entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    end
    local n, bytes = #entries, 0
    for i = 1, #entries do
        bytes = bytes + #(fields(entries[i][2]).d or '')
        if i > 1 and bytes > READ_MAX_BYTES then
            n = i - 1
            if mode ~= 'hist' then
                out[2] = 1
            end
            break
        end
    end
    for i = 1, n do
        local e = entries[i]
        if mode ~= 'hist' and since_e then
            e = entries[n + 1 - i] -- oldest first
        end
        local f = fields(e[2])
        out[#out + 1] = e36 .. '-' .. int(seq_of(e[1])) .. (f.r and ' ' .. f.r or '')
        out[#out + 1] = f.t or '0'
        out[#out + 1] = f.ct or ''
        out[#out + 1] = f.p or ''
        out[#out + 1] = f.d or ''
    end
    return out
end

local function herald_init(keys, args)
    if #keys ~= 1 or (#args ~= 4 and #args ~= #SETTINGS) then
        fail('usage: FCALL herald_init 1 <prefix>conf <size> <ttl_ms> <max_bytes> <max_msg> ' ..
            '[<idempotency_window_ms> <max_channels>]')
    end
    local p = prefix_of(keys[1], 'conf')
    local set = {}
    for i = 1, #args do
        if not string.find(args[i], '^%d+$') then
            fail('expected numbers')
        end
        set[#set + 1] = SETTINGS[i]
        set[#set + 1] = args[i]
    end
    local prev = redis.call('HMGET', keys[1], unpack(SETTINGS))
    redis.call('HSET', keys[1], unpack(set))
    local epoch = epoch_of(p, now_ms())
    local cur = tonumber(redis.call('HGET', p .. 'meta', 'seq')) or 0
    local out = {}
    for i = 1, #args do
        out[i] = prev[i] or ''
    end
    out[#args + 1] = base36(tonumber(epoch)) .. '-' .. int(cur)
    return out
end

-- An operator's revocation, stored and announced in one atomic call: every node subscribed to
-- P ctl hears it, and a node that connects later reads the live members of P revoked.
local function herald_revoke(keys, args)
    local member, untilms, now, max = args[1], tonumber(args[2]), tonumber(args[3]),
        tonumber(args[4])
    if not untilms or not now or not max or #args ~= 5 or #keys ~= 2 then
        fail('herald_revoke: expected member, until, now, max, announcement')
    end
    redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', int(now))
    if not redis.call('ZSCORE', keys[1], member) and redis.call('ZCARD', keys[1]) >= max then
        return redis.error_reply('REVOCATIONS ' .. int(max) ..
                                 ' live revocations held (max_revocations)')
    end
    redis.call('ZADD', keys[1], 'GT', int(untilms), member)
    local last = redis.call('ZRANGE', keys[1], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', keys[1], int(tonumber(last[2]) + 1000))
    return redis.call('PUBLISH', keys[2], args[5])
end

-- ---- presence (docs/chat.md) ----
--
-- Each node keeps its members' connections here under a lease it renews (herald_plive every
-- quarter of presence_lease, the lease running three quarters of it ahead): a node that dies or
-- is cut off stops renewing, and the next herald_plive of any other node, at most a quarter of
-- the lease after it ran out, drops its connections and publishes the leaves, once (one atomic
-- call does it). For a prefix P and channel C:
--
--   P pm:<C>    hash  conn -> "<member key>\n<member json>": every member connection of C
--   P pk:<C>    hash  member key -> its connections in the cluster (a user's tabs: one key)
--   P pz:<C>    zset  "<member key>\0<conn>", every score 0: the member connections in byte
--                     order of their keys (then connection ids), read a page at a time by lex
--                     range (herald_pget: O(log N + page), no sort of the channel's members)
--   P pc:<node> set   the channels where the node has (or had) member connections
--   P pnodes    zset  node -> when its lease runs out (ms)
--
-- Connection ids are "<node>-<hex>" (the node's own name first). Join and leave events go out
-- on P msg:<C> as "~j" / "~l" in the id's place, then the time, an empty content type and
-- stamp, and {"member":<json>,"conn":"<conn>"}; an ephemeral message is "~e" with its own type,
-- stamp and payload (published by the node itself).
--
--   FCALL herald_pjoin 0 P <node> <lease_ms> <C> <conn> <key> <json>      -> member's conns
--   FCALL herald_pleave 0 P <C> <conn>                                     -> 1 if it left
--   FCALL herald_plive 0 P <node> <lease_ms>                               -> leaves emitted
--   FCALL herald_pdrop 0 P <node>                                          -> leaves emitted
--   FCALL herald_pget 0 P <C> <cursor or ""> <limit> [<max_conns>]  -> {members, page text}
--   FCALL herald_pconns 0 P <C> <key> <cursor or ""> <limit>  -> {the key's conns, page text}
--   FCALL herald_occ 0 P <node> <C> 1|0   -> 1 when the channel became occupied (vacated)
--   FCALL herald_osync 0 P <node> <C1> .. <Cn>  -> events written (the node's channels now)

local function check_conn(node, conn)
    if not string.find(node, '^[0-9a-f]+$') or string.sub(conn, 1, #node + 1) ~= node .. '-' or
        not string.find(conn, '^[0-9a-f]+%-[0-9a-f]+$') then
        fail('bad node or connection id')
    end
end

local function pres_event(p, channel, kind, now, json, conn)
    local ev = '{"member":' .. json .. ',"conn":"' .. conn .. '"}'
    redis.call('PUBLISH', p .. 'msg:' .. channel, kind .. '\n' .. int(now) .. '\n\n\n' .. ev)
    -- for webhooks' member.added / member.removed (src/hooks/hooks.lua reads it), when a node
    -- sends them: once for the cluster, whichever node's call made the event
    if redis.call('EXISTS', p .. 'hk:members') == 1 then
        redis.call('XADD', p .. 'hk:pev', 'MAXLEN', '~', '10000', '*', 'k', kind, 'c', channel,
            'd', ev)
    end
end

-- Drops one member connection; publishes the leave when it was the member's last.
local function pres_drop(p, channel, conn, now)
    local v = redis.call('HGET', p .. 'pm:' .. channel, conn)
    if not v then
        return 0
    end
    redis.call('HDEL', p .. 'pm:' .. channel, conn)
    local nl = string.find(v, '\n', 1, true)
    local key, json = string.sub(v, 1, nl - 1), string.sub(v, nl + 1)
    redis.call('ZREM', p .. 'pz:' .. channel, key .. '\0' .. conn)
    local n = redis.call('HINCRBY', p .. 'pk:' .. channel, key, -1)
    if n > 0 then
        return 0
    end
    redis.call('HDEL', p .. 'pk:' .. channel, key)
    pres_event(p, channel, '~l', now, json, conn)
    return 1
end

-- Webhooks' channel.occupied / channel.vacated, once for the cluster: P oc:<channel> is the set
-- of nodes with subscribers on it, P on:<node> the channels of a node; an event is written to
-- P hk:pev (src/hooks/hooks.lua reads it) when the first node comes and when the last goes.
-- Nodes call it only when they send channel.* webhooks (give every node the same webhooks).
local function occ_set(p, node, channel, on)
    local changed
    if on then
        changed = redis.call('SADD', p .. 'oc:' .. channel, node) == 1
        redis.call('SADD', p .. 'on:' .. node, channel)
    else
        changed = redis.call('SREM', p .. 'oc:' .. channel, node) == 1
        redis.call('SREM', p .. 'on:' .. node, channel)
    end
    if changed and redis.call('SCARD', p .. 'oc:' .. channel) == (on and 1 or 0) then
        redis.call('XADD', p .. 'hk:pev', 'MAXLEN', '~', '10000', '*', 'k', on and '~o' or '~v',
            'c', channel, 'd', '{}')
        return 1
    end
    return 0
end

-- Every channel of a dead node: left (vacated where it was the last).
local function occ_reap(p, node)
    for _, channel in ipairs(redis.call('SMEMBERS', p .. 'on:' .. node)) do
        occ_set(p, node, channel, false)
    end
    redis.call('DEL', p .. 'on:' .. node)
end

local function herald_occ(keys, args)
    if #args ~= 4 then
        fail('usage: FCALL herald_occ 0 <prefix> <node> <channel> 1|0')
    end
    check_channel(args[3])
    return occ_set(args[1], args[2], args[3], args[4] == '1')
end

-- A node's channels are exactly those given (after a reconnect: what changed meanwhile is
-- reported, what did not is not).
local function herald_osync(keys, args)
    local p, node = args[1], args[2]
    local want = {}
    for i = 3, #args do
        check_channel(args[i])
        want[args[i]] = true
    end
    local n = 0
    for _, channel in ipairs(redis.call('SMEMBERS', p .. 'on:' .. node)) do
        if not want[channel] then
            n = n + occ_set(p, node, channel, false)
        end
    end
    for channel in pairs(want) do
        n = n + occ_set(p, node, channel, true)
    end
    return n
end

-- Every connection of node, on every channel: gone (leaves for the members that had no other).
local function pres_reap(p, node, now)
    local left = 0
    for _, channel in ipairs(redis.call('SMEMBERS', p .. 'pc:' .. node)) do
        local all = redis.call('HKEYS', p .. 'pm:' .. channel)
        for i = 1, #all do
            if string.sub(all[i], 1, #node + 1) == node .. '-' then
                left = left + pres_drop(p, channel, all[i], now)
            end
        end
    end
    redis.call('DEL', p .. 'pc:' .. node)
    redis.call('ZREM', p .. 'pnodes', node)
    return left
end

local function herald_pjoin(keys, args)
    if #args ~= 7 then
        fail('usage: FCALL herald_pjoin 0 <prefix> <node> <lease_ms> <channel> <conn> <key> <json>')
    end
    local p, node, lease, channel, conn, key, json = unpack(args)
    check_conn(node, conn)
    check_channel(channel)
    local now = now_ms()
    redis.call('ZADD', p .. 'pnodes', int(now + tonumber(lease)), node)
    -- before the check below, so that a node joining its members again also lists those
    -- joined by a build without P pz (an upgrade)
    redis.call('ZADD', p .. 'pz:' .. channel, 0, key .. '\0' .. conn)
    if redis.call('HSET', p .. 'pm:' .. channel, conn, key .. '\n' .. json) == 0 then
        return 0 -- already there (a node joining its members again after a reconnect)
    end
    redis.call('SADD', p .. 'pc:' .. node, channel)
    local n = redis.call('HINCRBY', p .. 'pk:' .. channel, key, 1)
    if n == 1 then
        pres_event(p, channel, '~j', now, json, conn)
    end
    return n
end

local function herald_pleave(keys, args)
    if #args ~= 3 then
        fail('usage: FCALL herald_pleave 0 <prefix> <channel> <conn>')
    end
    return pres_drop(args[1], args[2], args[3], now_ms())
end

local function herald_plive(keys, args)
    if #args ~= 3 then
        fail('usage: FCALL herald_plive 0 <prefix> <node> <lease_ms>')
    end
    local p, node = args[1], args[2]
    local now = now_ms()
    redis.call('ZADD', p .. 'pnodes', int(now + tonumber(args[3])), node)
    local left = 0
    local dead = redis.call('ZRANGEBYSCORE', p .. 'pnodes', '-inf', int(now), 'LIMIT', 0, 8)
    for _, d in ipairs(dead) do
        if d ~= node then
            left = left + pres_reap(p, d, now)
            occ_reap(p, d)
        end
    end
    return left
end

local function herald_pdrop(keys, args)
    if #args ~= 2 then
        fail('usage: FCALL herald_pdrop 0 <prefix> <node>')
    end
    return pres_reap(args[1], args[2], now_ms())
end

-- A page: the members after cursor in byte order of their keys, at most limit, each with its
-- first max_conns connections and their count (a user with thousands of connections is one entry
-- of a bounded size; herald_pconns pages the rest). P pz:<C> holds "<key>\0<conn>" (a key has no
-- NUL byte: it is a C string in herald), so every entry of a key sorts before those of the next
-- key, and the entries after the cursor's start at "<cursor>\1" (an entry of the cursor itself
-- is "<cursor>\0.."). The entries are read by lex range in batches of PGET_BATCH; once a member
-- has max_conns listed, the read skips to "<key>\1" when its batch ends inside the member. The
-- cost is a binary search and at most PGET_BATCH entries a member of the page, whatever the
-- channel's size and its members' connections.
local PGET_BATCH = 32

local function herald_pget(keys, args)
    if #args ~= 4 and #args ~= 5 then
        fail('usage: FCALL herald_pget 0 <prefix> <channel> <cursor> <limit> [<max_conns>]')
    end
    local p, channel, cursor, limit = args[1], args[2], args[3], tonumber(args[4])
    local max_conns = tonumber(args[5] or '10')
    local zkey = p .. 'pz:' .. channel
    local from = cursor == '' and '-' or '[' .. cursor .. '\1'
    local page, conns, more = {}, {}, false
    while not more do
        local batch = redis.call('ZRANGE', zkey, from, '+', 'BYLEX', 'LIMIT', 0, PGET_BATCH)
        local key
        for _, e in ipairs(batch) do
            local z = string.find(e, '\0', 1, true)
            key = string.sub(e, 1, z - 1)
            if page[#page] ~= key then
                if #page == limit then
                    more = true
                    break
                end
                page[#page + 1] = key
                conns[key] = {}
            end
            local list = conns[key]
            if #list < max_conns then
                list[#list + 1] = string.sub(e, z + 1)
            end
        end
        if more or #batch < PGET_BATCH then
            break
        end
        if #conns[key] == max_conns then
            from = '[' .. key .. '\1' -- the rest of this member's connections are not listed
        else
            from = '(' .. batch[#batch]
        end
    end
    local out = {}
    for _, key in ipairs(page) do
        local v = redis.call('HGET', p .. 'pm:' .. channel, conns[key][1]) or '\n{}'
        local j = string.sub(v, string.find(v, '\n', 1, true) + 1)
        local body = string.sub(j, 1, #j - 1)
        local sep = #body > 1 and ',' or ''
        -- fewer than max_conns listed: the read saw every one (it stops only past a member's
        -- last entry, or at the end); else the count is P pk:<C>'s
        local n = #conns[key]
        if n == max_conns then
            n = tonumber(redis.call('HGET', p .. 'pk:' .. channel, key) or n)
        end
        out[#out + 1] = body .. sep .. '"conns":["' .. table.concat(conns[key], '","') ..
            '"],"conn_count":' .. int(n) .. '}'
    end
    local next = 'null'
    if more then
        next = cjson.encode(page[#page])
    end
    return {redis.call('HLEN', p .. 'pk:' .. channel),
        '"members":[' .. table.concat(out, ',') .. '],"next":' .. next}
end

-- A page of one member's connections: at most limit of key's connection ids after cursor (""
-- from the first), in byte order, read by one lex range of its entries in P pz:<C>.
--   -> {its connections in the cluster (0: not a member), '"member":<json>|null,"conns":[..],
--       "next":"<conn>"|null'}
local function herald_pconns(keys, args)
    if #args ~= 5 then
        fail('usage: FCALL herald_pconns 0 <prefix> <channel> <key> <cursor> <limit>')
    end
    local p, channel, key, cursor, limit = args[1], args[2], args[3], args[4], tonumber(args[5])
    local from = cursor == '' and '[' .. key .. '\0' or '(' .. key .. '\0' .. cursor
    local batch = redis.call('ZRANGE', p .. 'pz:' .. channel, from, '(' .. key .. '\1', 'BYLEX',
        'LIMIT', 0, limit + 1)
    local n = tonumber(redis.call('HGET', p .. 'pk:' .. channel, key) or 0)
    local list = {}
    for i = 1, math.min(#batch, limit) do
        list[i] = string.sub(batch[i], #key + 2)
    end
    local member = 'null'
    if n > 0 then
        -- the member's object, from any of its connections (the page's first, or its first)
        local any = list[1]
        if not any then
            local first = redis.call('ZRANGE', p .. 'pz:' .. channel, '[' .. key .. '\0',
                '(' .. key .. '\1', 'BYLEX', 'LIMIT', 0, 1)
            any = first[1] and string.sub(first[1], #key + 2)
        end
        local v = any and redis.call('HGET', p .. 'pm:' .. channel, any)
        if v then
            member = string.sub(v, string.find(v, '\n', 1, true) + 1)
        end
    end
    local conns = #list > 0 and '["' .. table.concat(list, '","') .. '"]' or '[]'
    local next = 'null'
    if #batch > limit then
        next = '"' .. list[#list] .. '"'
    end
    return {n, '"member":' .. member .. ',"conns":' .. conns .. ',"next":' .. next}
end

redis.register_function('herald_publish', herald_publish)
redis.register_function('herald_revoke', herald_revoke)
redis.register_function('herald_publish_batch', herald_publish_batch)
-- Reads only free memory (trimming) or write a few bytes (a new epoch, the settings): they keep
-- serving subscribers and polls when Redis is out of memory, where publishing is refused.
redis.register_function{function_name = 'herald_read', callback = herald_read,
    flags = {'allow-oom'}}
redis.register_function{function_name = 'herald_init', callback = herald_init,
    flags = {'allow-oom'}}
redis.register_function('herald_pjoin', herald_pjoin)
redis.register_function('herald_occ', herald_occ)
redis.register_function('herald_osync', herald_osync)
-- Leaving and the lease only free memory: they run when Redis is out of memory too.
redis.register_function{function_name = 'herald_pleave', callback = herald_pleave,
    flags = {'allow-oom'}}
redis.register_function{function_name = 'herald_plive', callback = herald_plive,
    flags = {'allow-oom'}}
redis.register_function{function_name = 'herald_pdrop', callback = herald_pdrop,
    flags = {'allow-oom'}}
redis.register_function{function_name = 'herald_pget', callback = herald_pget,
    flags = {'allow-oom', 'no-writes'}}
redis.register_function{function_name = 'herald_pconns', callback = herald_pconns,
    flags = {'allow-oom', 'no-writes'}}
