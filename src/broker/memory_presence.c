/* SPDX-License-Identifier: MIT */
/*
 * memory_presence.c: the embedded broker's presence members (memory_presence.h). Channels in a
 * channel table, members of a channel in a hash map by key and in blocks sorted by key (the
 * snapshot's order: a page is a binary search and a copy, never a sort), each member with the
 * connections it is present with. Called under the broker's lock only.
 */
#include "memory_presence.h"

#include "herald/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef struct pmember_s {
    hd_hnode_t node; /* in the channel's members; key: who's key */
    /* A reference to the member it joined as first: its key, and the public object (json) a
     * page shows. */
    hd_member_t *who;
    /* its connections, each a reference to the member it joined with (its id: conn), in strcmp
     * order of their ids: a leave finds its own by binary search (a user with thousands of
     * connections on one channel costs each leave a memmove of pointers, not thousands of
     * string compares under the broker's lock), and a page lists them in the order Redis does.
     * One connection (the usual case) lives in one, with no allocation. */
    hd_member_t **conns;
    size_t n_conns, cap_conns;
    hd_member_t *one;
} pmember_t;

typedef struct hd_pchan_s {
    hd_chan_t ch;
    hd_hmap_t members; /* pmember_t */
    /* The same members in byte order of their keys, in blocks of at most PBLOCK (a sorted
     * list unrolled: blocks[0] holds the first keys): a join or leave is two binary searches
     * and a memmove inside one block (1 KiB at most) and, when a block splits or empties, of
     * the block pointers (8 bytes a PBLOCK members); a page reads the blocks in place. */
    struct pblock_s **blocks;
    size_t n_blocks, cap_blocks;
    char name[];
} hd_pchan_t;

#define PBLOCK 128

typedef struct pblock_s {
    size_t n;
    pmember_t *m[PBLOCK];
} pblock_t;

#define REFUSAL_LOG_MS 10000u

void hd_mpres_init(hd_mpres_t *p, uint64_t max_channels)
{
    memset(p, 0, sizeof(*p));
    HD_CHANTAB_INIT(&p->chans, hd_pchan_t, 16);
    p->max_channels = max_channels;
}

static void free_member(pmember_t *m)
{
    for (size_t i = 0; i < m->n_conns; i++)
        hd_member_unref(m->conns[i]);
    if (m->conns != &m->one)
        free(m->conns);
    hd_member_unref(m->who);
    free(m);
}

static void free_member_cb(hd_hnode_t *node, void *arg)
{
    hd_pchan_t *c = arg;
    hd_hmap_remove(&c->members, node);
    free_member(hd_container_of(node, pmember_t, node));
}

static void free_chan(hd_mpres_t *p, hd_pchan_t *c)
{
    hd_hmap_foreach(&c->members, free_member_cb, c);
    hd_hmap_dispose(&c->members);
    for (size_t b = 0; b < c->n_blocks; b++)
        free(c->blocks[b]);
    free(c->blocks);
    hd_chantab_free(&p->chans, &c->ch);
}

static void free_chan_cb(hd_chan_t *ch, void *arg)
{
    free_chan(arg, hd_container_of(ch, hd_pchan_t, ch));
}

void hd_mpres_dispose(hd_mpres_t *p)
{
    hd_chantab_foreach(&p->chans, free_chan_cb, p);
    hd_chantab_dispose(&p->chans);
}

static hd_pchan_t *find_chan(const hd_mpres_t *p, const char *name, size_t len, uint64_t hash)
{
    hd_chan_t *c = hd_chantab_find_hashed(&p->chans, name, len, hash);
    return c ? hd_container_of(c, hd_pchan_t, ch) : NULL;
}

static pmember_t *find_member(const hd_pchan_t *c, const hd_member_t *member)
{
    hd_hnode_t *n =
        hd_hmap_find_hashed(&c->members, member->key, member->key_len, member->key_hash);
    return n ? hd_container_of(n, pmember_t, node) : NULL;
}

static int key_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* The place in m->conns of the first connection id at or after conn: a binary search. */
static size_t conn_find(const pmember_t *m, const char *conn)
{
    size_t lo = 0, hi = m->n_conns;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(m->conns[mid]->conn, conn) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The place in blk of the first member whose key sorts after key (is_after), or at or after
 * it (!is_after); blk->n when none. */
static size_t block_find(const pblock_t *blk, const char *key, size_t key_len, int is_after)
{
    size_t lo = 0, hi = blk->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const hd_hnode_t *n = &blk->m[mid]->node;
        int cmp = key_cmp(n->key, n->key_len, key, key_len);
        if (cmp < 0 || (is_after && cmp == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The place (*b, *i) of that member among c's blocks; *b == c->n_blocks when none. */
static void sorted_find(const hd_pchan_t *c, const char *key, size_t key_len, int is_after,
                        size_t *b, size_t *i)
{
    size_t lo = 0, hi = c->n_blocks; /* the first block whose last member qualifies */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const pblock_t *blk = c->blocks[mid];
        const hd_hnode_t *n = &blk->m[blk->n - 1]->node;
        int cmp = key_cmp(n->key, n->key_len, key, key_len);
        if (cmp < 0 || (is_after && cmp == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    *b = lo;
    *i = lo < c->n_blocks ? block_find(c->blocks[lo], key, key_len, is_after) : 0;
}

/* A new empty block at place b of c's blocks. */
static pblock_t *block_add(hd_pchan_t *c, size_t b)
{
    c->blocks = hd_grow_array(c->blocks, &c->cap_blocks, c->n_blocks + 1, sizeof(*c->blocks), 4);
    memmove(c->blocks + b + 1, c->blocks + b, (c->n_blocks - b) * sizeof(*c->blocks));
    c->n_blocks++;
    c->blocks[b] = hd_malloc(sizeof(pblock_t));
    c->blocks[b]->n = 0;
    return c->blocks[b];
}

/* Block b of c goes (it was emptied or merged). */
static void block_drop(hd_pchan_t *c, size_t b)
{
    free(c->blocks[b]);
    c->n_blocks--;
    memmove(c->blocks + b, c->blocks + b + 1, (c->n_blocks - b) * sizeof(*c->blocks));
}

/* m, not yet in c->members, takes its place among c's blocks. */
static void sorted_insert(hd_pchan_t *c, pmember_t *m)
{
    size_t b, i;
    sorted_find(c, m->node.key, m->node.key_len, 0, &b, &i);
    if (c->n_blocks == 0) {
        block_add(c, 0);
        b = i = 0;
    } else if (b == c->n_blocks) { /* after every key: at the end of the last block */
        b = c->n_blocks - 1;
        i = c->blocks[b]->n;
    }
    pblock_t *blk = c->blocks[b];
    if (blk->n == PBLOCK) { /* full: its upper half moves to a new block after it */
        pblock_t *next = block_add(c, b + 1);
        blk = c->blocks[b];
        memcpy(next->m, blk->m + PBLOCK / 2, (PBLOCK / 2) * sizeof(*blk->m));
        next->n = blk->n = PBLOCK / 2;
        if (i > PBLOCK / 2) {
            blk = next;
            i -= PBLOCK / 2;
        }
    }
    memmove(blk->m + i + 1, blk->m + i, (blk->n - i) * sizeof(*blk->m));
    blk->m[i] = m;
    blk->n++;
}

/* m leaves c's blocks; a block below a quarter full joins a neighbour it fits in, so a crowd
 * that left does not keep its blocks. */
static void sorted_remove(hd_pchan_t *c, const pmember_t *m)
{
    size_t b, i;
    sorted_find(c, m->node.key, m->node.key_len, 0, &b, &i);
    HD_ASSERT(b < c->n_blocks && i < c->blocks[b]->n && c->blocks[b]->m[i] == m);
    pblock_t *blk = c->blocks[b];
    blk->n--;
    memmove(blk->m + i, blk->m + i + 1, (blk->n - i) * sizeof(*blk->m));
    if (blk->n == 0) {
        block_drop(c, b);
        return;
    }
    if (blk->n >= PBLOCK / 4)
        return;
    if (b + 1 < c->n_blocks && blk->n + c->blocks[b + 1]->n <= PBLOCK)
        b++; /* the next block joins this one */
    else if (b == 0 || c->blocks[b - 1]->n + blk->n > PBLOCK)
        return;
    pblock_t *into = c->blocks[b - 1], *from = c->blocks[b];
    memcpy(into->m + into->n, from->m, from->n * sizeof(*from->m));
    into->n += from->n;
    block_drop(c, b);
}

static pmember_t *new_member(hd_member_t *member)
{
    pmember_t *m = hd_calloc(1, sizeof(*m));
    m->who = hd_member_ref(member);
    m->node.key = member->key;
    m->node.key_len = member->key_len;
    m->conns = &m->one;
    m->cap_conns = 1;
    return m;
}

/* Room in m->conns for one more. */
static void conns_grow(pmember_t *m)
{
    if (m->n_conns < m->cap_conns)
        return;
    if (m->conns == &m->one) { /* a second connection: the ids move to an array */
        m->conns = hd_malloc(4 * sizeof(*m->conns));
        m->conns[0] = m->one;
        m->cap_conns = 4;
        return;
    }
    m->conns = hd_grow_array(m->conns, &m->cap_conns, m->n_conns + 1, sizeof(*m->conns), 4);
}

hd_message_t *hd_mpres_join(hd_mpres_t *p, const char *channel, size_t len, uint64_t hash,
                            hd_member_t **mp, int *err)
{
    hd_member_t *member = *mp;
    *err = 0;
    hd_pchan_t *c = find_chan(p, channel, len, hash);
    if (!c) {
        if (hd_chantab_count(&p->chans) >= p->max_channels) {
            p->refused++;
            *err = HD_ECHANNELS;
            return NULL;
        }
        c = hd_container_of(hd_chantab_get(&p->chans, channel, len, NULL), hd_pchan_t, ch);
        hd_hmap_init(&c->members, 8);
    }
    pmember_t *m = find_member(c, member);
    int is_new = m == NULL;
    if (is_new) {
        m = new_member(member);
        sorted_insert(c, m);
        hd_hmap_insert_hashed(&c->members, &m->node, member->key_hash); /* hd_member_new's */
        p->members++;
    }
    size_t at = conn_find(m, member->conn);
    conns_grow(m);
    memmove(m->conns + at + 1, m->conns + at, (m->n_conns - at) * sizeof(*m->conns));
    m->conns[at] = member; /* the caller's reference */
    *mp = NULL;
    m->n_conns++;
    p->conns++;
    if (!is_new)
        return NULL;
    p->events++;
    hd_message_t *ev = hd_presence_event(HD_MSG_JOIN, channel, len, member);
    ev->channel_hash = hash;
    return ev;
}

hd_message_t *hd_mpres_leave(hd_mpres_t *p, const char *channel, size_t len, uint64_t hash,
                             const hd_member_t *member)
{
    hd_pchan_t *c = find_chan(p, channel, len, hash);
    pmember_t *m = c ? find_member(c, member) : NULL;
    if (!m)
        return NULL;
    size_t i = conn_find(m, member->conn);
    if (i == m->n_conns || (m->conns[i] != member && strcmp(m->conns[i]->conn, member->conn) != 0))
        return NULL; /* not one of its connections (a refused join): nothing to undo */
    hd_member_unref(m->conns[i]);
    m->n_conns--;
    memmove(m->conns + i, m->conns + i + 1, (m->n_conns - i) * sizeof(*m->conns));
    p->conns--;
    if (m->n_conns)
        return NULL;
    sorted_remove(c, m);
    hd_hmap_remove(&c->members, &m->node);
    free_member(m);
    p->members--;
    if (c->members.n == 0)
        free_chan(p, c);
    p->events++;
    hd_message_t *ev = hd_presence_event(HD_MSG_LEAVE, channel, len, member);
    ev->channel_hash = hash;
    return ev;
}

uint64_t hd_mpres_count(const hd_mpres_t *p, const char *channel, size_t len)
{
    hd_pchan_t *c = find_chan(p, channel, len, 0);
    return c ? c->members.n : 0;
}

static void append_json_string(hd_sbuf_t *sb, const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    char *text = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (text)
        hd_sbuf_appends(sb, text);
    else
        hd_sbuf_appends(sb, "null"); /* not UTF-8: cannot be a JSON string */
    free(text);
    json_decref(j);
}

/* Appends "conns":["<id>",..] of m's connections [from, to): ids are [0-9a-f-], no escaping. */
static void append_conns(hd_sbuf_t *sb, const pmember_t *m, size_t from, size_t to)
{
    hd_sbuf_appends(sb, "\"conns\":[");
    for (size_t k = from; k < to; k++) {
        if (k > from)
            hd_sbuf_append(sb, ",", 1);
        hd_sbuf_append(sb, "\"", 1);
        hd_sbuf_append(sb, m->conns[k]->conn, m->conns[k]->conn_len);
        hd_sbuf_append(sb, "\"", 1);
    }
    hd_sbuf_append(sb, "]", 1);
}

static void set_page(hd_breq_t *r, hd_sbuf_t *sb)
{
    hd_buf_t *text = hd_sbuf_finish(sb);
    free(r->page);
    r->page = hd_strndup(text->data, text->len);
    hd_buf_unref(text);
}

static size_t page_limit(const hd_breq_t *r)
{
    size_t limit = r->limit ? r->limit : HD_PRESENCE_PAGE_DEFAULT;
    return limit > HD_PRESENCE_PAGE_MAX ? HD_PRESENCE_PAGE_MAX : limit;
}

/* A page of one member's connections (r->member_key): a hash lookup, a binary search and the
 * page's copy. */
static void member_page(const hd_pchan_t *c, hd_breq_t *r)
{
    size_t limit = page_limit(r);
    size_t key_len = strlen(r->member_key);
    hd_member_t key = {
        .key = r->member_key, .key_len = key_len, .key_hash = hd_hash(r->member_key, key_len)};
    const pmember_t *m = c ? find_member(c, &key) : NULL;
    size_t from = 0, to = 0;
    if (m && r->cursor) {
        from = conn_find(m, r->cursor);
        if (from < m->n_conns && strcmp(m->conns[from]->conn, r->cursor) == 0)
            from++;
    }
    if (m)
        to = m->n_conns - from > limit ? from + limit : m->n_conns;
    r->members = m ? m->n_conns : 0;
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 64 + (m ? m->who->json_len : 0) + (to - from) * 32);
    hd_sbuf_appends(&sb, "\"member\":");
    if (m)
        hd_sbuf_append(&sb, m->who->json, m->who->json_len);
    else
        hd_sbuf_appends(&sb, "null");
    hd_sbuf_append(&sb, ",", 1);
    if (m)
        append_conns(&sb, m, from, to);
    else
        hd_sbuf_appends(&sb, "\"conns\":[]");
    hd_sbuf_appends(&sb, ",\"next\":");
    if (m && to < m->n_conns && to > from) {
        hd_sbuf_append(&sb, "\"", 1);
        hd_sbuf_append(&sb, m->conns[to - 1]->conn, m->conns[to - 1]->conn_len);
        hd_sbuf_append(&sb, "\"", 1);
    } else {
        hd_sbuf_appends(&sb, "null");
    }
    set_page(r, &sb);
}

void hd_mpres_page(const hd_mpres_t *p, hd_breq_t *r)
{
    hd_pchan_t *c = find_chan(p, r->channel, strlen(r->channel), 0);
    if (r->member_key) {
        member_page(c, r);
        return;
    }
    size_t limit = page_limit(r);
    size_t total = c ? c->members.n : 0, b = 0, i = 0, n = 0;
    if (c && r->cursor)
        sorted_find(c, r->cursor, strlen(r->cursor), 1, &b, &i);
    r->members = total;
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 64 + (limit < total ? limit : total) * 96);
    hd_sbuf_appends(&sb, "\"members\":[");
    const pmember_t *last = NULL;
    while (c && b < c->n_blocks && n < limit) {
        const pmember_t *m = last = c->blocks[b]->m[i];
        if (++i == c->blocks[b]->n) {
            b++;
            i = 0;
        }
        if (n++)
            hd_sbuf_appends(&sb, ",");
        hd_sbuf_append(&sb, m->who->json, m->who->json_len - 1); /* without its '}' */
        hd_sbuf_append(&sb, ",", 1);
        /* a bounded entry, whatever the member's connections: the first ids and the count */
        append_conns(&sb, m, 0,
                     m->n_conns < HD_PRESENCE_MEMBER_CONNS ? m->n_conns : HD_PRESENCE_MEMBER_CONNS);
        hd_sbuf_appendf(&sb, ",\"conn_count\":%zu}", m->n_conns);
    }
    hd_sbuf_appends(&sb, "],\"next\":");
    if (c && b < c->n_blocks && last) /* more after the page */
        append_json_string(&sb, last->node.key, last->node.key_len);
    else
        hd_sbuf_appends(&sb, "null");
    set_page(r, &sb);
}

void hd_mpres_log_limits(hd_mpres_t *p, uint64_t now_ms)
{
    if (p->refused == p->refused_logged)
        return;
    if (p->refused_log_ms && now_ms - p->refused_log_ms < REFUSAL_LOG_MS)
        return;
    hd_log_warn("%llu presence joins refused: presence_max_channels (%llu) reached; those "
                "connections are subscribed but not listed as present",
                (unsigned long long)(p->refused - p->refused_logged),
                (unsigned long long)p->max_channels);
    p->refused_logged = p->refused;
    p->refused_log_ms = now_ms;
}
