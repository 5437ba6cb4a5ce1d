/* turn_relay._fastpath: the ChannelData data plane of bound channels, in C (Linux).
 *
 * The Python core (turn_relay.server) stays the authority. RelayNode registers every UDP socket
 * (listeners and relayed sockets) with an Engine, which owns one epoll set; the node hands the
 * engine's poll method to the event loop as the reader of that epoll descriptor. poll() drains
 * ready sockets with recvmmsg and, for each datagram in order:
 *
 *   - ChannelData from a client on a channel the core told it about (set_allocation), whose channel
 *     and permission have not lapsed, with an exact length (or exact padding), is checked against
 *     the encrypted-only gate and the allocation's bandwidth bucket and forwarded to the peer;
 *   - a datagram from a bound peer to a relayed socket likewise becomes ChannelData to the client;
 *   - a payload the gate refuses without changing any state (not RFC 7983; RTP before DTLS) or
 *     one over the bandwidth cap is dropped and counted under the same reason the core uses;
 *   - everything else (STUN, Send indications, unbound channels, lapsed bindings, odd lengths,
 *     DTLS handshakes before a path is keyed, data from peers without a channel) goes unchanged
 *     to the Python callback, synchronously and in order, so every later datagram sees what the
 *     core made of it (the node re-syncs that allocation right after the callback).
 *
 * Forwarded packets wait in their receive slots and leave with sendmmsg, grouped by socket (so peer
 * data from many relayed sockets to clients of one listener is one call), flushed before every
 * callback, when the slots run out and at the end of each poll. Counters go to the core's RelayMetrics and the node's counters
 * at the end of each poll. The TokenBucket type here is the allocation bucket the core uses when
 * the fast path is on, so both paths take from the same tokens.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64            /* datagrams per recvmmsg */
#define POOL 256            /* receive slots; forwarded datagrams wait in theirs until the sends are flushed */
#define DRAIN_BUDGET 256    /* datagrams read from one socket per poll (node.DRAIN_BATCH) */
#define MAX_EVENTS 256
#define HEADROOM 4          /* room for the ChannelData header in front of peer data */
#define MAX_DATAGRAM 65536  /* node.MAX_DATAGRAM: what the Python path's recvfrom reads */
#define SLOT (HEADROOM + MAX_DATAGRAM)

enum { KIND_NONE = 0, KIND_LISTENER = 1, KIND_RELAY = 2 };
enum { VERDICT_SLOW = 0, VERDICT_PASS = 1, VERDICT_NOT_RFC7983 = 2, VERDICT_RTP_BEFORE_DTLS = 3 };

/* ---------------------------------------------------------------------------------------------- */
/* TokenBucket: limits.TokenBucket in C, the same arithmetic on the same doubles.                  */

typedef struct {
    PyObject_HEAD
    double rate;
    double burst;
    double tokens;
    double stamp;
} BucketObject;

static PyTypeObject BucketType;

static inline double bucket_refill(BucketObject *b, double now) {
    double elapsed = now - b->stamp;
    if (elapsed > 0) { /* a clock that steps back refills nothing */
        double tokens;
        b->stamp = now;
        tokens = b->tokens + elapsed * b->rate;
        b->tokens = tokens < b->burst ? tokens : b->burst;
    }
    return b->tokens;
}

static inline int bucket_take(BucketObject *b, double amount, double now) {
    if (bucket_refill(b, now) < amount) return 0;
    b->tokens -= amount;
    return 1;
}

static int Bucket_init(BucketObject *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"rate", "burst", "now", NULL};
    double rate, burst, now;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ddd", names, &rate, &burst, &now)) return -1;
    self->rate = rate;
    self->burst = burst;
    self->tokens = burst;
    self->stamp = now;
    return 0;
}

static PyObject *Bucket_take(BucketObject *self, PyObject *const *args, Py_ssize_t nargs) {
    double amount, now;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take(amount, now)");
        return NULL;
    }
    amount = PyFloat_AsDouble(args[0]);
    if (amount == -1.0 && PyErr_Occurred()) return NULL;
    now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(bucket_take(self, amount, now));
}

static PyObject *Bucket_is_full(BucketObject *self, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(bucket_refill(self, now) >= self->burst);
}

static PyMethodDef Bucket_methods[] = {
    {"take", (PyCFunction)(void (*)(void))Bucket_take, METH_FASTCALL,
     "Take amount tokens if there are that many; False (taking none) otherwise."},
    {"is_full", (PyCFunction)Bucket_is_full, METH_O, "True when the bucket has refilled completely."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Bucket_members[] = {
    {"rate", T_DOUBLE, offsetof(BucketObject, rate), 0, "tokens per second"},
    {"burst", T_DOUBLE, offsetof(BucketObject, burst), 0, "most tokens held"},
    {"tokens", T_DOUBLE, offsetof(BucketObject, tokens), 0, "tokens now"},
    {"stamp", T_DOUBLE, offsetof(BucketObject, stamp), 0, "time of the last refill"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BucketType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "turn_relay._fastpath.TokenBucket",
    .tp_basicsize = sizeof(BucketObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "rate tokens per second, holding at most burst; starts full (limits.TokenBucket in C).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Bucket_init,
    .tp_methods = Bucket_methods,
    .tp_members = Bucket_members,
};

/* ---------------------------------------------------------------------------------------------- */
/* Engine state                                                                                    */

typedef struct {
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint16_t number;
    uint8_t keyed;
    double channel_expires;
    double permission_expires;
} Channel;

typedef struct Alloc {
    int relay_fd;
    int listener_fd;
    struct sockaddr_storage client;
    socklen_t client_len;
    BucketObject *bucket; /* strong reference, or NULL */
    Py_ssize_t nchannels;
    Channel *channels;
    uint64_t hash;
    struct Alloc *next; /* client hash chain */
} Alloc;

typedef struct {
    uint64_t generation; /* 0: not registered */
    int kind;
    PyObject *key; /* the listener's or relayed socket's Python address */
    Alloc *alloc;  /* relayed sockets: the allocation with bound channels, or NULL */
} SockEntry;

typedef struct {
    long long packets_to_peer, bytes_to_peer, packets_to_client, bytes_to_client;
    long long drop_not_rfc7983, drop_rtp_before_dtls, drop_bandwidth;
    long long datagrams_in, datagrams_out, send_errors;
} Counts;

typedef struct {
    PyObject_HEAD
    int epfd;
    SockEntry *socks;
    int nsocks;
    uint64_t next_generation;
    Alloc **table;
    size_t table_size; /* power of two */
    size_t nallocs;
    PyObject *client_slow, *peer_slow, *clock, *metrics, *counters;
    PyObject *key_not_rfc7983, *key_rtp_before_dtls, *key_bandwidth;
    int encrypted_only;
    int channel_end;
    int polling;
    Counts counts;
    Counts totals; /* what this engine decided itself since start, for tests */
    unsigned char *buffers;
    int pos; /* next free receive slot */
    struct mmsghdr rmsgs[POOL];
    struct iovec riov[POOL];
    struct sockaddr_storage raddr[POOL];
    struct mmsghdr smsgs[POOL];
    struct iovec siov[POOL];
    int sfd[POOL];
    int nsend;
} EngineObject;

static PyObject *str_packets_to_peer, *str_bytes_to_peer, *str_packets_to_client, *str_bytes_to_client, *str_drops,
    *str_datagrams_in, *str_datagrams_out, *str_send_errors;

/* ---------------------------------------------------------------------------------------------- */
/* Addresses                                                                                       */

static int addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) { /* host and port only, as the Python (host, port) key */
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return 0;
}

static uint64_t fnv(uint64_t h, const void *data, size_t size) {
    const unsigned char *p = data;
    for (size_t i = 0; i < size; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t client_hash(int listener_fd, const struct sockaddr_storage *addr) {
    uint64_t h = fnv(14695981039346656037ULL, &listener_fd, sizeof listener_fd);
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        h = fnv(h, &a->sin_port, 2);
        h = fnv(h, &a->sin_addr, 4);
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        h = fnv(h, &a->sin6_port, 2);
        h = fnv(h, &a->sin6_addr, 16);
    }
    return h;
}

/* (host, port) as the Python path sends to it: scope and flow label 0. */
static int parse_address(PyObject *host, PyObject *port, struct sockaddr_storage *out, socklen_t *len) {
    const char *text = PyUnicode_AsUTF8(host);
    long number;
    if (text == NULL) return -1;
    number = PyLong_AsLong(port);
    if (number == -1 && PyErr_Occurred()) return -1;
    if (number < 0 || number > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    memset(out, 0, sizeof *out);
    if (strchr(text, ':') == NULL) {
        struct sockaddr_in *a = (struct sockaddr_in *)out;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)number);
        if (inet_pton(AF_INET, text, &a->sin_addr) != 1) goto bad;
        *len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)number);
        if (inet_pton(AF_INET6, text, &a->sin6_addr) != 1) goto bad;
        *len = sizeof *a;
    }
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "%s is not an IP address", text);
    return -1;
}

/* The (host, port) the Python path gets from socket.recvfrom (inet_ntop, as CPython does). */
static int format_address(const struct sockaddr_storage *addr, PyObject **host, int *port) {
    char text[INET6_ADDRSTRLEN];
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
        *port = ntohs(a->sin_port);
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
        *port = ntohs(a->sin6_port);
    } else {
        PyErr_SetString(PyExc_OSError, "datagram from an address family other than IPv4 and IPv6");
        return -1;
    }
    *host = PyUnicode_FromString(text);
    return *host == NULL ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Tables                                                                                          */

static Alloc *find_client(EngineObject *e, int listener_fd, const struct sockaddr_storage *addr) {
    uint64_t h = client_hash(listener_fd, addr);
    for (Alloc *a = e->table[h & (e->table_size - 1)]; a != NULL; a = a->next) {
        if (a->hash == h && a->listener_fd == listener_fd && addr_equal(&a->client, addr)) return a;
    }
    return NULL;
}

static void unlink_client(EngineObject *e, Alloc *alloc) {
    Alloc **slot = &e->table[alloc->hash & (e->table_size - 1)];
    while (*slot != NULL) {
        if (*slot == alloc) {
            *slot = alloc->next;
            e->nallocs--;
            return;
        }
        slot = &(*slot)->next;
    }
}

static int grow_table(EngineObject *e) {
    size_t size = e->table_size * 2;
    Alloc **table = PyMem_Calloc(size, sizeof(Alloc *));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < e->table_size; i++) {
        Alloc *a = e->table[i];
        while (a != NULL) {
            Alloc *next = a->next;
            a->next = table[a->hash & (size - 1)];
            table[a->hash & (size - 1)] = a;
            a = next;
        }
    }
    PyMem_Free(e->table);
    e->table = table;
    e->table_size = size;
    return 0;
}

static void free_alloc(EngineObject *e, Alloc *alloc) {
    unlink_client(e, alloc);
    if (alloc->relay_fd >= 0 && alloc->relay_fd < e->nsocks && e->socks[alloc->relay_fd].alloc == alloc) {
        e->socks[alloc->relay_fd].alloc = NULL;
    }
    Py_XDECREF(alloc->bucket);
    PyMem_Free(alloc->channels);
    PyMem_Free(alloc);
}

static SockEntry *entry_of(EngineObject *e, int fd, int kind) {
    if (fd < 0 || fd >= e->nsocks || e->socks[fd].generation == 0) return NULL;
    if (kind != KIND_NONE && e->socks[fd].kind != kind) return NULL;
    return &e->socks[fd];
}

/* ---------------------------------------------------------------------------------------------- */
/* Sending                                                                                         */

static void flush(EngineObject *e) {
    int start = 0;
    while (start < e->nsend) {
        int fd = e->sfd[start], end = start + 1;
        while (end < e->nsend && e->sfd[end] == fd) end++;
        while (start < end) {
            int sent = sendmmsg(fd, &e->smsgs[start], (unsigned int)(end - start), MSG_DONTWAIT);
            if (sent < 0) { /* the first one failed (full buffer, unreachable, ...): UDP may drop, so do we */
                if (errno == EINTR) continue;
                e->counts.send_errors++;
                start++;
            } else {
                e->counts.datagrams_out += sent;
                start += sent;
                if (start < end && sent == 0) { /* not expected; never spin */
                    e->counts.send_errors++;
                    start++;
                }
            }
        }
    }
    e->nsend = 0;
}

static inline void queue_send(EngineObject *e, int fd, unsigned char *data, size_t size,
                              struct sockaddr_storage *to, socklen_t to_len) {
    int i = e->nsend++;
    e->siov[i].iov_base = data;
    e->siov[i].iov_len = size;
    e->smsgs[i].msg_hdr = (struct msghdr){0};
    e->smsgs[i].msg_hdr.msg_name = to;
    e->smsgs[i].msg_hdr.msg_namelen = to_len;
    e->smsgs[i].msg_hdr.msg_iov = &e->siov[i];
    e->smsgs[i].msg_hdr.msg_iovlen = 1;
    e->sfd[i] = fd;
}

/* ---------------------------------------------------------------------------------------------- */
/* The gate (classify.MediaPath.check) where it changes no state                                   */

static inline int gate(const Channel *c, const unsigned char *payload, size_t size) {
    unsigned first;
    if (size == 0) return VERDICT_NOT_RFC7983;
    first = payload[0];
    if (first >= 128 && first <= 191) return c->keyed ? VERDICT_PASS : VERDICT_RTP_BEFORE_DTLS;
    if (first >= 20 && first <= 63) {
        /* A DTLS handshake record on a path not keyed yet moves the gate's state: the core decides. */
        if (!c->keyed && size >= 13 && first == 22 && payload[1] == 0xFE) return VERDICT_SLOW;
        return VERDICT_PASS;
    }
    if (first <= 3) return VERDICT_PASS;
    return VERDICT_NOT_RFC7983;
}

static inline int count_refusal(EngineObject *e, int verdict) {
    if (verdict == VERDICT_NOT_RFC7983) {
        e->counts.drop_not_rfc7983++;
        e->totals.drop_not_rfc7983++;
        return 1;
    }
    if (verdict == VERDICT_RTP_BEFORE_DTLS) {
        e->counts.drop_rtp_before_dtls++;
        e->totals.drop_rtp_before_dtls++;
        return 1;
    }
    return 0;
}

/* A datagram from a client to listener_fd at p (n bytes, HEADROOM bytes free before it):
   1 if handled here (forwarded or dropped and counted), 0 for the Python path. */
static int client_datagram(EngineObject *e, int listener_fd, unsigned char *p, size_t n,
                           const struct sockaddr_storage *from, double now) {
    Alloc *a;
    Channel *c = NULL;
    unsigned number, length;
    size_t trailing;
    if (n < 4 || p[0] < 0x40 || p[0] >= e->channel_end) return 0;
    a = find_client(e, listener_fd, from);
    if (a == NULL) return 0;
    number = ((unsigned)p[0] << 8) | p[1];
    length = ((unsigned)p[2] << 8) | p[3];
    for (Py_ssize_t i = 0; i < a->nchannels; i++) {
        if (a->channels[i].number == number) {
            c = &a->channels[i];
            break;
        }
    }
    if (c == NULL || !(c->channel_expires > now) || !(c->permission_expires > now)) return 0;
    if (n - 4 < length) return 0;
    trailing = n - 4 - length;
    if (trailing != 0 && trailing != ((4 - (length & 3)) & 3)) return 0; /* only none, or exact padding */
    if (e->encrypted_only) {
        int verdict = gate(c, p + 4, length);
        if (verdict == VERDICT_SLOW) return 0;
        if (count_refusal(e, verdict)) return 1;
    }
    if (a->bucket != NULL && !bucket_take(a->bucket, (double)length, now)) {
        e->counts.drop_bandwidth++;
        e->totals.drop_bandwidth++;
        return 1;
    }
    e->counts.packets_to_peer++;
    e->counts.bytes_to_peer += length;
    e->totals.packets_to_peer++;
    queue_send(e, a->relay_fd, p + 4, length, &c->peer, c->peer_len);
    return 1;
}

/* A datagram from a peer to the relayed socket of allocation a, at p (HEADROOM bytes free before). */
static int peer_datagram(EngineObject *e, Alloc *a, unsigned char *p, size_t n,
                         const struct sockaddr_storage *from, double now) {
    Channel *c = NULL;
    if (n > 0xFFFF) return 0;
    for (Py_ssize_t i = 0; i < a->nchannels; i++) {
        if (addr_equal(&a->channels[i].peer, from)) {
            c = &a->channels[i];
            break;
        }
    }
    if (c == NULL || !(c->channel_expires > now) || !(c->permission_expires > now)) return 0;
    if (e->encrypted_only) {
        int verdict = gate(c, p, n);
        if (verdict == VERDICT_SLOW) return 0;
        if (count_refusal(e, verdict)) return 1;
    }
    if (a->bucket != NULL && !bucket_take(a->bucket, (double)n, now)) {
        e->counts.drop_bandwidth++;
        e->totals.drop_bandwidth++;
        return 1;
    }
    p[-4] = (unsigned char)(c->number >> 8);
    p[-3] = (unsigned char)(c->number & 0xFF);
    p[-2] = (unsigned char)(n >> 8);
    p[-1] = (unsigned char)(n & 0xFF);
    e->counts.packets_to_client++;
    e->counts.bytes_to_client += (long long)n;
    e->totals.packets_to_client++;
    queue_send(e, a->listener_fd, p - 4, n + 4, &a->client, a->client_len);
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Counters into the Python objects                                                                */

static int add_attribute(PyObject *target, PyObject *name, long long delta) {
    PyObject *value, *sum, *amount;
    int result;
    if (delta == 0) return 0;
    value = PyObject_GetAttr(target, name);
    if (value == NULL) return -1;
    amount = PyLong_FromLongLong(delta);
    if (amount == NULL) {
        Py_DECREF(value);
        return -1;
    }
    sum = PyNumber_Add(value, amount);
    Py_DECREF(value);
    Py_DECREF(amount);
    if (sum == NULL) return -1;
    result = PyObject_SetAttr(target, name, sum);
    Py_DECREF(sum);
    return result;
}

static int add_item(PyObject *dict, PyObject *key, long long delta) {
    PyObject *value, *sum, *amount;
    int result;
    if (delta == 0) return 0;
    value = PyObject_GetItem(dict, key);
    if (value == NULL) return -1;
    amount = PyLong_FromLongLong(delta);
    if (amount == NULL) {
        Py_DECREF(value);
        return -1;
    }
    sum = PyNumber_Add(value, amount);
    Py_DECREF(value);
    Py_DECREF(amount);
    if (sum == NULL) return -1;
    result = PyObject_SetItem(dict, key, sum);
    Py_DECREF(sum);
    return result;
}

static int fold_counts(EngineObject *e) {
    Counts c = e->counts;
    PyObject *drops;
    int failed = 0;
    memset(&e->counts, 0, sizeof e->counts);
    failed |= add_attribute(e->metrics, str_packets_to_peer, c.packets_to_peer);
    failed |= add_attribute(e->metrics, str_bytes_to_peer, c.bytes_to_peer);
    failed |= add_attribute(e->metrics, str_packets_to_client, c.packets_to_client);
    failed |= add_attribute(e->metrics, str_bytes_to_client, c.bytes_to_client);
    if (c.drop_not_rfc7983 || c.drop_rtp_before_dtls || c.drop_bandwidth) {
        drops = PyObject_GetAttr(e->metrics, str_drops);
        if (drops == NULL) return -1;
        failed |= add_item(drops, e->key_not_rfc7983, c.drop_not_rfc7983);
        failed |= add_item(drops, e->key_rtp_before_dtls, c.drop_rtp_before_dtls);
        failed |= add_item(drops, e->key_bandwidth, c.drop_bandwidth);
        Py_DECREF(drops);
    }
    failed |= add_attribute(e->counters, str_datagrams_in, c.datagrams_in);
    failed |= add_attribute(e->counters, str_datagrams_out, c.datagrams_out);
    failed |= add_attribute(e->counters, str_send_errors, c.send_errors);
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* poll                                                                                            */

static int call_slow(EngineObject *e, PyObject *callback, unsigned char *p, size_t n,
                     const struct sockaddr_storage *from, PyObject *key, PyObject *now) {
    PyObject *host, *result;
    int port;
    flush(e); /* what came before goes out before whatever the core answers */
    if (format_address(from, &host, &port) < 0) return -1;
    result = PyObject_CallFunction(callback, "y#NiOO", (const char *)p, (Py_ssize_t)n, host, port, key, now);
    if (result == NULL) return -1;
    Py_DECREF(result);
    return 0;
}

/* Drain one socket (up to DRAIN_BUDGET datagrams). -1 with an exception set if a callback raised. */
static int drain(EngineObject *e, int fd, uint64_t generation, PyObject *now_object, double now) {
    SockEntry *entry = &e->socks[fd];
    int kind = entry->kind, budget = DRAIN_BUDGET, status = 0;
    PyObject *key = entry->key;
    Py_INCREF(key); /* a callback may unregister the socket */
    while (budget > 0) {
        int want = budget < BATCH ? budget : BATCH, got, base;
        if (POOL - e->pos < want) { /* slots run out: send what waits in them, then reuse them all */
            flush(e);
            e->pos = 0;
        }
        base = e->pos;
        for (int i = base; i < base + want; i++) e->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        got = recvmmsg(fd, &e->rmsgs[base], (unsigned int)want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            e->counts.send_errors++; /* e.g. an ICMP error reported on the socket, as node.py counts it */
            budget--;
            continue;
        }
        if (got == 0) break;
        budget -= got;
        e->pos += got;
        e->counts.datagrams_in += got;
        for (int i = base; i < base + got; i++) {
            unsigned char *p = e->buffers + (size_t)i * SLOT + HEADROOM;
            size_t n = e->rmsgs[i].msg_len;
            const struct sockaddr_storage *from = &e->raddr[i];
            int handled = 0;
            if (entry->generation == generation) { /* still registered (a callback may have closed it) */
                if (kind == KIND_LISTENER) {
                    handled = client_datagram(e, fd, p, n, from, now);
                } else if (entry->alloc != NULL) {
                    handled = peer_datagram(e, entry->alloc, p, n, from, now);
                }
            }
            if (!handled) {
                PyObject *callback = kind == KIND_LISTENER ? e->client_slow : e->peer_slow;
                if (call_slow(e, callback, p, n, from, key, now_object) < 0) {
                    status = -1;
                    goto done;
                }
                entry = &e->socks[fd]; /* the table may have been reallocated */
            }
        }
        if (got < want || entry->generation != generation) break;
    }
done:
    Py_DECREF(key);
    return status;
}

static PyObject *Engine_poll(EngineObject *e, PyObject *unused) {
    struct epoll_event events[MAX_EVENTS];
    PyObject *now_object;
    double now;
    int ready, status = 0;
    if (e->epfd < 0) Py_RETURN_NONE;
    if (e->polling) {
        PyErr_SetString(PyExc_RuntimeError, "poll() called from one of its own callbacks");
        return NULL;
    }
    now_object = PyObject_CallNoArgs(e->clock);
    if (now_object == NULL) return NULL;
    now = PyFloat_AsDouble(now_object);
    if (now == -1.0 && PyErr_Occurred()) {
        Py_DECREF(now_object);
        return NULL;
    }
    ready = epoll_wait(e->epfd, events, MAX_EVENTS, 0);
    if (ready < 0) {
        Py_DECREF(now_object);
        if (errno == EINTR) Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    e->polling = 1;
    for (int i = 0; i < ready && status == 0; i++) {
        uint64_t generation = events[i].data.u64;
        int fd = (int)(generation & 0xFFFFFFFFu);
        if (fd >= e->nsocks || e->socks[fd].generation != generation) continue; /* closed meanwhile */
        status = drain(e, fd, generation, now_object, now);
    }
    flush(e); /* peer data to clients of many relayed sockets leaves in one sendmmsg per listener */
    e->pos = 0;
    e->polling = 0;
    Py_DECREF(now_object);
    if (status < 0) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        fold_counts(e);
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    if (fold_counts(e) < 0) return NULL;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------------- */
/* Registration                                                                                    */

static int ensure_socks(EngineObject *e, int fd) {
    if (fd < e->nsocks) return 0;
    int size = e->nsocks ? e->nsocks : 64;
    while (size <= fd) size *= 2;
    SockEntry *socks = PyMem_Realloc(e->socks, (size_t)size * sizeof(SockEntry));
    if (socks == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(socks + e->nsocks, 0, (size_t)(size - e->nsocks) * sizeof(SockEntry));
    e->socks = socks;
    e->nsocks = size;
    return 0;
}

static PyObject *add_socket(EngineObject *e, PyObject *args, int kind) {
    int fd;
    PyObject *key;
    struct epoll_event event;
    uint64_t generation;
    if (!PyArg_ParseTuple(args, "iO", &fd, &key)) return NULL;
    if (e->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the engine is closed");
        return NULL;
    }
    if (fd < 0 || ensure_socks(e, fd) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return NULL;
    }
    if (e->socks[fd].generation != 0) {
        PyErr_SetString(PyExc_ValueError, "file descriptor already registered");
        return NULL;
    }
    generation = (e->next_generation++ << 32) | (uint32_t)fd;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    event.data.u64 = generation;
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &event) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_INCREF(key);
    e->socks[fd].generation = generation;
    e->socks[fd].kind = kind;
    e->socks[fd].key = key;
    e->socks[fd].alloc = NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_add_listener(EngineObject *e, PyObject *args) { return add_socket(e, args, KIND_LISTENER); }
static PyObject *Engine_add_relay(EngineObject *e, PyObject *args) { return add_socket(e, args, KIND_RELAY); }

static void forget_listener_allocs(EngineObject *e, int listener_fd) {
    for (size_t i = 0; i < e->table_size; i++) {
        Alloc *a = e->table[i];
        while (a != NULL) {
            Alloc *next = a->next;
            if (a->listener_fd == listener_fd) free_alloc(e, a);
            a = next;
        }
    }
}

static void unregister(EngineObject *e, int fd) {
    SockEntry *entry = &e->socks[fd];
    if (e->epfd >= 0) epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
    if (entry->kind == KIND_RELAY && entry->alloc != NULL) free_alloc(e, entry->alloc);
    if (entry->kind == KIND_LISTENER) forget_listener_allocs(e, fd);
    Py_CLEAR(entry->key);
    entry->generation = 0;
    entry->kind = KIND_NONE;
    entry->alloc = NULL;
}

static PyObject *Engine_remove_socket(EngineObject *e, PyObject *arg) {
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd >= 0 && fd <= INT32_MAX && entry_of(e, (int)fd, KIND_NONE) != NULL) unregister(e, (int)fd);
    Py_RETURN_NONE;
}

static int parse_channel(PyObject *item, Channel *c) {
    PyObject *number, *host, *port, *channel_expires, *permission_expires, *keyed;
    long value;
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 6) {
        PyErr_SetString(PyExc_TypeError, "a channel is (number, host, port, expires, permission_expires, keyed)");
        return -1;
    }
    number = PyTuple_GET_ITEM(item, 0);
    host = PyTuple_GET_ITEM(item, 1);
    port = PyTuple_GET_ITEM(item, 2);
    channel_expires = PyTuple_GET_ITEM(item, 3);
    permission_expires = PyTuple_GET_ITEM(item, 4);
    keyed = PyTuple_GET_ITEM(item, 5);
    value = PyLong_AsLong(number);
    if (value == -1 && PyErr_Occurred()) return -1;
    if (value < 0x4000 || value > 0x7FFF) { /* what the core may bind (0x5000-0x7FFF only with legacy) */
        PyErr_SetString(PyExc_ValueError, "channel number out of 0x4000..0x7FFF");
        return -1;
    }
    c->number = (uint16_t)value;
    if (parse_address(host, port, &c->peer, &c->peer_len) < 0) return -1;
    c->channel_expires = PyFloat_AsDouble(channel_expires);
    if (c->channel_expires == -1.0 && PyErr_Occurred()) return -1;
    c->permission_expires = PyFloat_AsDouble(permission_expires);
    if (c->permission_expires == -1.0 && PyErr_Occurred()) return -1;
    value = PyObject_IsTrue(keyed);
    if (value < 0) return -1;
    c->keyed = (uint8_t)value;
    return 0;
}

/* set_allocation(relay_fd, listener_fd, client_host, client_port, bucket, channels): the channels the
   core has bound for the allocation on relay_fd, replacing what the engine knew; none: forget it. */
static PyObject *Engine_set_allocation(EngineObject *e, PyObject *args) {
    int relay_fd, listener_fd;
    PyObject *host, *port, *bucket, *channels, *sequence = NULL;
    SockEntry *relay;
    Alloc *alloc;
    Channel *parsed = NULL;
    Py_ssize_t count;
    struct sockaddr_storage client;
    socklen_t client_len;
    if (!PyArg_ParseTuple(args, "iiOOOO", &relay_fd, &listener_fd, &host, &port, &bucket, &channels)) return NULL;
    relay = entry_of(e, relay_fd, KIND_RELAY);
    if (relay == NULL || entry_of(e, listener_fd, KIND_LISTENER) == NULL) {
        PyErr_SetString(PyExc_ValueError, "relayed or listener socket not registered");
        return NULL;
    }
    if (bucket != Py_None && !PyObject_TypeCheck(bucket, &BucketType)) {
        PyErr_SetString(PyExc_TypeError, "bucket must be a turn_relay._fastpath.TokenBucket or None");
        return NULL;
    }
    if (parse_address(host, port, &client, &client_len) < 0) return NULL;
    sequence = PySequence_Fast(channels, "channels must be a sequence");
    if (sequence == NULL) return NULL;
    count = PySequence_Fast_GET_SIZE(sequence);
    if (count > 0) {
        parsed = PyMem_Calloc((size_t)count, sizeof(Channel));
        if (parsed == NULL) {
            Py_DECREF(sequence);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            if (parse_channel(PySequence_Fast_GET_ITEM(sequence, i), &parsed[i]) < 0) {
                PyMem_Free(parsed);
                Py_DECREF(sequence);
                return NULL;
            }
        }
    }
    Py_DECREF(sequence);
    alloc = relay->alloc;
    if (alloc != NULL) free_alloc(e, alloc); /* replaced whole: no stale channel survives a sync */
    if (count == 0) Py_RETURN_NONE;
    alloc = find_client(e, listener_fd, &client);
    if (alloc != NULL) free_alloc(e, alloc); /* the core's latest word wins (not expected: one allocation per 5-tuple) */
    if (e->nallocs + 1 > e->table_size && grow_table(e) < 0) {
        PyMem_Free(parsed);
        return NULL;
    }
    alloc = PyMem_Calloc(1, sizeof(Alloc));
    if (alloc == NULL) {
        PyMem_Free(parsed);
        return PyErr_NoMemory();
    }
    alloc->relay_fd = relay_fd;
    alloc->listener_fd = listener_fd;
    alloc->client = client;
    alloc->client_len = client_len;
    alloc->bucket = bucket == Py_None ? NULL : (BucketObject *)bucket;
    Py_XINCREF(alloc->bucket);
    alloc->nchannels = count;
    alloc->channels = parsed;
    alloc->hash = client_hash(listener_fd, &client);
    alloc->next = e->table[alloc->hash & (e->table_size - 1)];
    e->table[alloc->hash & (e->table_size - 1)] = alloc;
    e->nallocs++;
    relay->alloc = alloc;
    Py_RETURN_NONE;
}

/* expire(now): forget every channel whose binding or permission has lapsed; returns how many. */
static PyObject *Engine_expire(EngineObject *e, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    long removed = 0;
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    for (size_t i = 0; i < e->table_size; i++) {
        Alloc *a = e->table[i];
        while (a != NULL) {
            Alloc *next = a->next;
            Py_ssize_t kept = 0;
            for (Py_ssize_t j = 0; j < a->nchannels; j++) {
                Channel *c = &a->channels[j];
                if (c->channel_expires > now && c->permission_expires > now) {
                    a->channels[kept++] = *c;
                } else {
                    removed++;
                }
            }
            a->nchannels = kept;
            if (kept == 0) free_alloc(e, a);
            a = next;
        }
    }
    return PyLong_FromLong(removed);
}

/* bindings(): [(relay_fd, channel number, peer host, peer port, keyed)], what the engine forwards now. */
static PyObject *Engine_bindings(EngineObject *e, PyObject *unused) {
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < e->table_size; i++) {
        for (Alloc *a = e->table[i]; a != NULL; a = a->next) {
            for (Py_ssize_t j = 0; j < a->nchannels; j++) {
                PyObject *host, *item;
                int port;
                if (format_address(&a->channels[j].peer, &host, &port) < 0) goto fail;
                item = Py_BuildValue("(iiNiO)", a->relay_fd, a->channels[j].number, host, port,
                                     a->channels[j].keyed ? Py_True : Py_False);
                if (item == NULL || PyList_Append(list, item) < 0) {
                    Py_XDECREF(item);
                    goto fail;
                }
                Py_DECREF(item);
            }
        }
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

/* stats(): what the engine decided itself since it started (forwarded and dropped), for tests. */
static PyObject *Engine_stats(EngineObject *e, PyObject *unused) {
    return Py_BuildValue("{sLsLsLsLsL}", "packets_to_peer", e->totals.packets_to_peer, "packets_to_client",
                         e->totals.packets_to_client, "not-rfc7983", e->totals.drop_not_rfc7983, "rtp-before-dtls",
                         e->totals.drop_rtp_before_dtls, "bandwidth", e->totals.drop_bandwidth);
}

static PyObject *Engine_fileno(EngineObject *e, PyObject *unused) { return PyLong_FromLong(e->epfd); }

static void engine_clear_tables(EngineObject *e) {
    for (int fd = 0; fd < e->nsocks; fd++) {
        if (e->socks[fd].generation != 0) unregister(e, fd);
    }
    for (size_t i = 0; i < e->table_size; i++) {
        while (e->table[i] != NULL) free_alloc(e, e->table[i]);
    }
}

static PyObject *Engine_close(EngineObject *e, PyObject *unused) {
    if (e->polling) {
        PyErr_SetString(PyExc_RuntimeError, "close() called from a poll() callback");
        return NULL;
    }
    engine_clear_tables(e);
    if (e->epfd >= 0) {
        close(e->epfd);
        e->epfd = -1;
    }
    Py_RETURN_NONE;
}

static int Engine_init(EngineObject *e, PyObject *args, PyObject *kwds) {
    static char *names[] = {"client_slow", "peer_slow", "clock", "metrics", "counters", "drop_reasons",
                            "encrypted_only", "channel_end", NULL};
    PyObject *client_slow, *peer_slow, *clock, *metrics, *counters, *drops;
    int encrypted_only, channel_end;
    if (e->epfd >= 0 || e->table != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOpi", names, &client_slow, &peer_slow, &clock, &metrics,
                                     &counters, &drops, &encrypted_only, &channel_end)) {
        return -1;
    }
    if (!PyTuple_Check(drops) || PyTuple_GET_SIZE(drops) != 3) {
        PyErr_SetString(PyExc_TypeError, "drop_reasons is (not-rfc7983, rtp-before-dtls, bandwidth)");
        return -1;
    }
    if (channel_end < 0x41 || channel_end > 0x80) {
        PyErr_SetString(PyExc_ValueError, "channel_end must be 0x50 or 0x80");
        return -1;
    }
    e->buffers = PyMem_Malloc((size_t)POOL * SLOT); /* pages are committed as datagrams touch them */
    e->table_size = 64;
    e->table = PyMem_Calloc(e->table_size, sizeof(Alloc *));
    if (e->buffers == NULL || e->table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < POOL; i++) { /* fixed: slot i receives into buffer i and raddr i */
        e->riov[i].iov_base = e->buffers + (size_t)i * SLOT + HEADROOM;
        e->riov[i].iov_len = MAX_DATAGRAM;
        memset(&e->rmsgs[i].msg_hdr, 0, sizeof(struct msghdr));
        e->rmsgs[i].msg_hdr.msg_name = &e->raddr[i];
        e->rmsgs[i].msg_hdr.msg_iov = &e->riov[i];
        e->rmsgs[i].msg_hdr.msg_iovlen = 1;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    e->next_generation = 1;
    Py_INCREF(client_slow);
    e->client_slow = client_slow;
    Py_INCREF(peer_slow);
    e->peer_slow = peer_slow;
    Py_INCREF(clock);
    e->clock = clock;
    Py_INCREF(metrics);
    e->metrics = metrics;
    Py_INCREF(counters);
    e->counters = counters;
    e->key_not_rfc7983 = Py_NewRef(PyTuple_GET_ITEM(drops, 0));
    e->key_rtp_before_dtls = Py_NewRef(PyTuple_GET_ITEM(drops, 1));
    e->key_bandwidth = Py_NewRef(PyTuple_GET_ITEM(drops, 2));
    e->encrypted_only = encrypted_only;
    e->channel_end = channel_end;
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    EngineObject *e = (EngineObject *)type->tp_alloc(type, 0);
    if (e != NULL) e->epfd = -1;
    return (PyObject *)e;
}

static int Engine_traverse(EngineObject *e, visitproc visit, void *arg) {
    Py_VISIT(e->client_slow);
    Py_VISIT(e->peer_slow);
    Py_VISIT(e->clock);
    Py_VISIT(e->metrics);
    Py_VISIT(e->counters);
    for (int fd = 0; fd < e->nsocks; fd++) Py_VISIT(e->socks[fd].key);
    return 0;
}

static int Engine_clear(EngineObject *e) {
    Py_CLEAR(e->client_slow);
    Py_CLEAR(e->peer_slow);
    Py_CLEAR(e->clock);
    Py_CLEAR(e->metrics);
    Py_CLEAR(e->counters);
    return 0;
}

static void Engine_dealloc(EngineObject *e) {
    PyObject_GC_UnTrack(e);
    if (e->table != NULL) engine_clear_tables(e);
    if (e->epfd >= 0) close(e->epfd);
    Engine_clear(e);
    Py_CLEAR(e->key_not_rfc7983);
    Py_CLEAR(e->key_rtp_before_dtls);
    Py_CLEAR(e->key_bandwidth);
    PyMem_Free(e->socks);
    PyMem_Free(e->table);
    PyMem_Free(e->buffers);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef Engine_methods[] = {
    {"poll", (PyCFunction)Engine_poll, METH_NOARGS, "Drain ready sockets: forward, drop and count, or call back."},
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "The epoll descriptor to watch for reading."},
    {"add_listener", (PyCFunction)Engine_add_listener, METH_VARARGS, "add_listener(fd, address)"},
    {"add_relay", (PyCFunction)Engine_add_relay, METH_VARARGS, "add_relay(fd, address)"},
    {"remove_socket", (PyCFunction)Engine_remove_socket, METH_O,
     "remove_socket(fd): stop watching it and forget its allocation's channels."},
    {"set_allocation", (PyCFunction)Engine_set_allocation, METH_VARARGS,
     "set_allocation(relay_fd, listener_fd, client_host, client_port, bucket, channels)"},
    {"expire", (PyCFunction)Engine_expire, METH_O, "expire(now) -> channels forgotten"},
    {"bindings", (PyCFunction)Engine_bindings, METH_NOARGS, "[(relay_fd, number, peer_host, peer_port, keyed)]"},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "What the engine decided itself since it started."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "Forget everything and close the epoll descriptor."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "turn_relay._fastpath.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The ChannelData data plane of bound channels (see the module source).",
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_methods = Engine_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "turn_relay._fastpath", "ChannelData fast path of the TURN relay (Linux).", -1, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    PyObject *m;
    if (PyType_Ready(&BucketType) < 0 || PyType_Ready(&EngineType) < 0) return NULL;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(str_packets_to_peer, "packets_to_peer");
    INTERN(str_bytes_to_peer, "bytes_to_peer");
    INTERN(str_packets_to_client, "packets_to_client");
    INTERN(str_bytes_to_client, "bytes_to_client");
    INTERN(str_drops, "drops");
    INTERN(str_datagrams_in, "datagrams_in");
    INTERN(str_datagrams_out, "datagrams_out");
    INTERN(str_send_errors, "send_errors");
#undef INTERN
    m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "TokenBucket", (PyObject *)&BucketType) < 0 ||
        PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddIntConstant(m, "BATCH", BATCH) < 0 || PyModule_AddIntConstant(m, "DRAIN_BUDGET", DRAIN_BUDGET) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
