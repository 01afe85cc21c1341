/* The gateway's client connections in C (pitwall.traffic.gateway._gwfast).
 *
 * Why: the gateway's per-request path is mostly Python interpreter time. This module serves the
 * common request -- a prefix/host/method route to a fixed upstream host -- without running any
 * Python code, and hands everything else to the Python path, with the same bytes either way.
 *
 * Types
 * -----
 * ``Client``: the asyncio Protocol of one plain-HTTP client connection of the gateway's listener
 * (TLS connections keep the Python ``_ClientConn``). It parses requests and answers them in order,
 * one at a time, exactly as ``_ClientConn`` does (at most ``MAX_PIPELINE`` queued before reading
 * pauses, reading resumes below half). ``Engine``: what one ``GatewayServer``'s connections share
 * (the current ``Plan``, the upstream ``Pool``s, the read deadlines). ``Plan``: one configuration's
 * router candidates in ``Router.candidates`` order and, per route, whether C serves it and what
 * ``_serialize`` needs; built by ``native.compile_plan`` and swapped in with the configuration, so
 * a request sees one configuration. ``Upstream``: the Protocol of one upstream connection (one
 * request at a time; idle ones wait in their ``Pool``, at most ``MAX_IDLE``).
 *
 * Parsing and hand-off
 * --------------------
 * The request parser is deliberately strict and small: it accepts only what it can frame with
 * certainty (``GET HEAD POST PUT PATCH DELETE OPTIONS``, an origin-form target of plain URL
 * characters, ``HTTP/1.1`` or ``HTTP/1.0``, at most ``MAX_HEADERS`` header lines of token names and
 * printable ASCII values, a body framed by one ``Content-Length``). Anything else -- chunked or other
 * transfer codings, ``Upgrade``, ``Expect``, obs-fold, tabs or bytes over 0x7e in values, a head
 * over the limits, a body over ``max_body_bytes``, malformed input -- is *handed off*: a Python
 * ``_ClientConn`` takes over the connection at once and is fed every byte from the start of that
 * request on, "busy" until the requests parsed here are answered. So every refusal (400, 413, 414,
 * 431, written at once with its linger-then-close) and every unusual request is served by the very
 * code that serves it without this module.
 *
 * Fast or delegated
 * -----------------
 * Per request, the C router walks the plan's candidates like ``Router.find``; the first match
 * decides. The request is *delegated* -- the same ``Request`` ``_ClientConn`` builds goes to
 * ``GatewayServer.begin``, whose answer comes back through ``respond`` (Python subclass) and
 * ``_answered`` -- when there is no plan (Kubernetes routes in force), no candidate matches (Kong's
 * 404), a candidate C cannot evaluate (header match, regex path) comes first, the Host header is
 * repeated or bracketed, or the route is not fast (upstream targets or a Kubernetes Service,
 * https-only, plugins other than those below, consumer-scoped plugin instances, non-ASCII service
 * path or host).
 *
 * Plugins in C, in the chain's priority order: key-auth (key_in_header; no ``anonymous``; a request
 * that would look in the query or body is delegated before anything happened) looks the key up in
 * the configuration's own ``consumers.keyauth`` dict, answers Kong's 401s, drops the forged
 * X-Consumer-* headers and appends the consumer's as ``_set_consumer`` does; rate-limiting (local
 * policy, limit_by consumer/credential/ip/service) checks and counts every period in one step in
 * ``ratelimit.COUNTERS.counts`` -- the Python path's own store, same keys and values -- and writes
 * ``RateLimiting._headers``'s headers.
 *
 * A fast request is serialized here exactly as ``GatewayServer._serialize`` does (header order of
 * the dict, lower-case names, repeats joined, X-Forwarded-*, x-real-ip, the content-length rule,
 * Kong's path_handling v0/v1, strip_path, preserve_host), sent on an idle pooled connection, or on
 * a new one that the Python helper ``native._connect`` opens under the service's connect timeout
 * (the request waits here; a stale answer is pooled). The response is parsed here (status line,
 * headers minus hop-by-hop, body by Content-Length, chunked with trailers, or close-delimited; HEAD
 * has none; over MAX_RESPONSE_BYTES is a failure) and answered as ``complete`` + ``encode_response``
 * write it. Failures follow ``_Exchange.upstream_done``/``_proxy_wait``: a connection failure is
 * retried always, a timeout or a bad response for idempotent methods, up to the service's
 * ``retries``; a failed connection is closed, never pooled; then Kong's 502/504 (503 for a name that
 * does not resolve) as the Python path writes them. Read timeouts share one loop timer armed for
 * the earliest deadline (as ``upstream.Deadlines``); write_timeout is armed only when a request
 * lags in the socket's buffer. A client gone mid-request closes its upstream connection.
 *
 * All methods run on the event loop with the GIL held; every buffer is bounded (request head <=
 * HEAD_LIMIT, body <= max_body_bytes, response head <= MAX_RESPONSE_HEAD, body <= MAX_RESPONSE_BYTES).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>

#define UNUSED __attribute__((unused))

#define MAX_URL (8 << 10)
#define MAX_HEADER_BYTES (32 << 10)
#define MAX_PIPELINE 16
#define MAX_HEADERS 100
/* A head longer than this is over one of Python's limits (or malformed): the Python parser decides. */
#define HEAD_LIMIT (MAX_URL + MAX_HEADER_BYTES + 4096)

/* ------------------------------------------------------------------------------------------------ */
/* Methods */

enum { M_GET, M_HEAD, M_POST, M_PUT, M_PATCH, M_DELETE, M_OPTIONS, M_COUNT };
static const char *const METHOD_NAMES[M_COUNT] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
static PyObject *method_str[M_COUNT];

/* Interned attribute names and constants. */
static PyObject *s_write, *s_close, *s_pause_reading, *s_resume_reading, *s_get_extra_info, *s_peername,
    *s_data_received, *s_connection_lost, *s_eof_received, *s_v11, *s_v10, *s_empty, *s_begin, *s_conns, *s_release;

/* ------------------------------------------------------------------------------------------------ */
/* Parsed requests */

typedef struct {
    uint32_t no, nl, vo, vl; /* name and value: offsets into Req.buf, lengths */
} Hdr;

typedef struct Req {
    struct Req *next;
    char *buf; /* head + body, owned */
    size_t len;
    uint32_t target_off, target_len, path_len;
    size_t body_off, body_len;
    int method, minor, keep_alive;
    int nh;
    Hdr h[];
} Req;

static void req_free(Req *r) {
    if (r == NULL) return;
    PyMem_Free(r->buf);
    PyMem_Free(r);
}

/* RFC 9110 tchar */
static unsigned char TCHAR[256];
/* Target characters the parser accepts (unreserved, sub-delims, ":@/?%" and "#"): llhttp accepts at least these. */
static unsigned char UCHAR[256];

static void init_tables(void) {
    const char *t = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++) TCHAR[c] = UCHAR[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) TCHAR[c] = UCHAR[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) TCHAR[c] = UCHAR[c] = 1;
    for (; *t; t++) TCHAR[(unsigned char)*t] = 1;
    const char *u = "-._~!$&'()*+,;=:@/?%#";
    for (; *u; u++) UCHAR[(unsigned char)*u] = 1;
}

static inline int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int ieq(const char *a, size_t n, const char *lit) {
    size_t m = strlen(lit);
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lit[i]) return 0;
    return 1;
}

/* Does the comma-separated token list (a Connection value) name ``tok``? */
static int has_token(const char *v, size_t n, const char *tok) {
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e > s && ieq(v + s, e - s, tok)) return 1;
    }
    return 0;
}

#define P_NEED 0
#define P_HANDOFF (-1)

/* Parse one request at p[0..n). Returns the bytes it takes (and *out), P_NEED when more bytes are
 * needed, or P_HANDOFF when the Python parser must decide. */
static Py_ssize_t parse_request(const char *p, size_t n, Py_ssize_t max_body, Req **out) {
    size_t scan = n < HEAD_LIMIT ? n : HEAD_LIMIT;
    const char *end = NULL;
    if (scan >= 4) end = memmem(p, scan, "\r\n\r\n", 4);
    if (end == NULL && n >= HEAD_LIMIT) return P_HANDOFF;
/* out of bytes before the head's end: wait for more; past the head's end: malformed */
#define OUT (end ? P_HANDOFF : P_NEED)
    /* The lines before the end of the head (or all complete lines so far): validated either way, so that
     * a malformed start is handed off (and refused) at once, not after the client sent more. */
    size_t head_len = end ? (size_t)(end - p) + 4 : 0;
    size_t limit = end ? head_len : scan;
    Hdr hs[MAX_HEADERS];
    int nh = 0;
    /* request line */
    int method = -1;
    for (int m = 0; m < M_COUNT; m++) {
        size_t ml = strlen(METHOD_NAMES[m]);
        if (limit >= ml + 1 && memcmp(p, METHOD_NAMES[m], ml) == 0 && p[ml] == ' ') {
            method = m;
            break;
        }
    }
    if (method < 0) {
        /* Maybe a method not complete yet: a prefix of one of ours is worth waiting for. */
        if (end == NULL && limit < 8) {
            for (int m = 0; m < M_COUNT; m++) {
                size_t ml = strlen(METHOD_NAMES[m]);
                size_t k = limit < ml ? limit : ml;
                if (memcmp(p, METHOD_NAMES[m], k) == 0 && (limit <= ml)) return P_NEED;
            }
        }
        return P_HANDOFF;
    }
    size_t i = strlen(METHOD_NAMES[method]) + 1;
    size_t target_off = i;
    if (i >= limit) return OUT;
    if (p[i] != '/') return P_HANDOFF;
    size_t qpos = 0;
    while (i < limit && p[i] != ' ') {
        if (!UCHAR[(unsigned char)p[i]]) return P_HANDOFF;
        if (p[i] == '?' && qpos == 0) qpos = i;
        i++;
    }
    if (i - target_off > MAX_URL) return P_HANDOFF; /* 414 from the Python parser */
    if (i >= limit) return OUT;
    size_t target_len = i - target_off;
    size_t path_len = qpos ? qpos - target_off : target_len;
    i++;
    if (limit - i < 10) return OUT;
    if (memcmp(p + i, "HTTP/1.", 7) != 0 || (p[i + 7] != '0' && p[i + 7] != '1') || p[i + 8] != '\r' ||
        p[i + 9] != '\n')
        return P_HANDOFF;
    int minor = p[i + 7] - '0';
    i += 10;
    /* headers */
    size_t header_bytes = 0;
    int conn_close = 0, conn_keep = 0;
    long long clen = -1;
    for (;;) {
        if (i + 2 > limit) return OUT;
        if (p[i] == '\r') {
            if (p[i + 1] != '\n') return P_HANDOFF;
            i += 2;
            break;
        }
        size_t ns = i;
        while (i < limit && TCHAR[(unsigned char)p[i]]) i++;
        if (i >= limit) return OUT;
        if (p[i] != ':' || i == ns) return P_HANDOFF;
        size_t nl = i - ns;
        i++;
        while (i < limit && (p[i] == ' ' || p[i] == '\t')) i++;
        size_t vs = i;
        while (i < limit && ((unsigned char)p[i] >= 0x20 && (unsigned char)p[i] < 0x7f)) i++;
        if (i >= limit) return OUT;
        if (p[i] == '\t') return P_HANDOFF; /* tabs inside values: the Python parser decides */
        if (i + 1 >= limit) return OUT;
        if (p[i] != '\r' || p[i + 1] != '\n') return P_HANDOFF;
        size_t vl = i - vs;
        i += 2;
        if (nh >= MAX_HEADERS) return P_HANDOFF;
        header_bytes += nl + vl + 4;
        if (header_bytes > MAX_HEADER_BYTES) return P_HANDOFF; /* 431 */
        const char *name = p + ns, *val = p + vs;
        if (nl == 14 && ieq(name, nl, "content-length")) {
            if (clen >= 0 || vl == 0 || vl > 15) return P_HANDOFF;
            long long v = 0;
            for (size_t k = 0; k < vl; k++) {
                if (val[k] < '0' || val[k] > '9') return P_HANDOFF;
                v = v * 10 + (val[k] - '0');
            }
            clen = v;
        } else if ((nl == 17 && ieq(name, nl, "transfer-encoding")) || (nl == 7 && ieq(name, nl, "upgrade")) ||
                   (nl == 6 && ieq(name, nl, "expect"))) {
            return P_HANDOFF;
        } else if (nl == 10 && ieq(name, nl, "connection")) {
            if (has_token(val, vl, "upgrade")) return P_HANDOFF;
            if (has_token(val, vl, "close")) conn_close = 1;
            if (has_token(val, vl, "keep-alive")) conn_keep = 1;
        }
        hs[nh].no = (uint32_t)ns;
        hs[nh].nl = (uint32_t)nl;
        hs[nh].vo = (uint32_t)vs;
        hs[nh].vl = (uint32_t)vl;
        nh++;
    }
    if (end == NULL || i != head_len) return P_HANDOFF; /* the head's end must be where the headers end */
    if (conn_close && conn_keep) return P_HANDOFF;
    size_t body_len = clen > 0 ? (size_t)clen : 0;
    if (clen > (long long)max_body) return P_HANDOFF; /* 413 */
    if (n - head_len < body_len) return P_NEED;
#undef OUT
    size_t total = head_len + body_len;
    Req *r = PyMem_Malloc(sizeof(Req) + (size_t)nh * sizeof(Hdr));
    if (r == NULL) return -2;
    r->buf = PyMem_Malloc(total ? total : 1);
    if (r->buf == NULL) {
        PyMem_Free(r);
        return -2;
    }
    memcpy(r->buf, p, total);
    memcpy(r->h, hs, (size_t)nh * sizeof(Hdr));
    r->next = NULL;
    r->len = total;
    r->target_off = (uint32_t)target_off;
    r->target_len = (uint32_t)target_len;
    r->path_len = (uint32_t)path_len;
    r->body_off = head_len;
    r->body_len = body_len;
    r->method = method;
    r->minor = minor;
    r->keep_alive = minor == 1 ? !conn_close : conn_keep; /* llhttp's should_keep_alive for a request */
    r->nh = nh;
    *out = r;
    return (Py_ssize_t)total;
}

/* The headers as _ClientConn builds them: lower-case names, repeats joined with ", " ("; " for cookie). */
static PyObject *req_headers_dict(Req *r) {
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    char name[256];
    for (int k = 0; k < r->nh; k++) {
        Hdr *h = &r->h[k];
        PyObject *key, *val, *cur;
        if (h->nl < sizeof(name)) {
            for (uint32_t j = 0; j < h->nl; j++) name[j] = (char)lower((unsigned char)r->buf[h->no + j]);
            key = PyUnicode_DecodeLatin1(name, h->nl, NULL);
        } else {
            char *big = PyMem_Malloc(h->nl);
            if (big == NULL) {
                Py_DECREF(d);
                return PyErr_NoMemory();
            }
            for (uint32_t j = 0; j < h->nl; j++) big[j] = (char)lower((unsigned char)r->buf[h->no + j]);
            key = PyUnicode_DecodeLatin1(big, h->nl, NULL);
            PyMem_Free(big);
        }
        if (key == NULL) goto fail;
        val = PyUnicode_DecodeLatin1(r->buf + h->vo, h->vl, NULL);
        if (val == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        cur = PyDict_GetItemWithError(d, key);
        if (cur != NULL) {
            int cookie = h->nl == 6 && ieq(r->buf + h->no, 6, "cookie");
            PyObject *joined = PyUnicode_FromFormat(cookie ? "%U; %U" : "%U, %U", cur, val);
            Py_DECREF(val);
            val = joined;
            if (val == NULL) {
                Py_DECREF(key);
                goto fail;
            }
        } else if (PyErr_Occurred()) {
            Py_DECREF(key);
            Py_DECREF(val);
            goto fail;
        }
        int rc = PyDict_SetItem(d, key, val);
        Py_DECREF(key);
        Py_DECREF(val);
        if (rc < 0) goto fail;
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* Small helpers */

#define MAX_IDLE 64                  /* idle upstream connections per (host, port), as upstream.MAX_IDLE */
#define MAX_RESPONSE_BYTES (64 << 20) /* as upstream.MAX_RESPONSE_BYTES */
#define MAX_RESPONSE_HEAD (1 << 20)  /* an upstream head longer than this is a bad response */
#define NSTATUS 1000

static double now_s(void) { /* time.perf_counter()'s clock */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Call ``obj.name(arg)`` and drop the result; errors go to sys.unraisablehook (a callback of the
 * loop has no caller to raise to). Returns -1 on error. */
static int call_method_quiet(PyObject *obj, PyObject *name, PyObject *arg) {
    PyObject *r = arg ? PyObject_CallMethodOneArg(obj, name, arg) : PyObject_CallMethodNoArgs(obj, name);
    if (r == NULL) {
        PyErr_WriteUnraisable(obj);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < *len + n) nc *= 2;
        char *nb = PyMem_Realloc(*buf, nc);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *buf = nb;
        *cap = nc;
    }
    if (n) memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

/* A growable byte buffer that starts on the stack. */
typedef struct {
    char *p;
    size_t len, cap;
    char st[2048];
} SBuf;

static void sb_init(SBuf *b) {
    b->p = b->st;
    b->len = 0;
    b->cap = sizeof b->st;
}

static void sb_free(SBuf *b) {
    if (b->p != b->st) PyMem_Free(b->p);
    b->p = b->st;
}

static int sb_add(SBuf *b, const void *s, size_t n) {
    if (b->len + n > b->cap) {
        size_t nc = b->cap * 2;
        while (nc < b->len + n) nc *= 2;
        char *np = PyMem_Malloc(nc);
        if (np == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(np, b->p, b->len);
        if (b->p != b->st) PyMem_Free(b->p);
        b->p = np;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

#define SB_LIT(b, lit) sb_add((b), (lit), sizeof(lit) - 1)

static int sb_num(SBuf *b, long long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    return sb_add(b, tmp, (size_t)n);
}

/* The buffer's bytes followed by ``tail`` as one new bytes object (one allocation, one write). */
static PyObject *sb_bytes(SBuf *b, const char *tail, size_t tl) {
    PyObject *o = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(b->len + tl));
    if (o == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(o), b->p, b->len);
    if (tl) memcpy(PyBytes_AS_STRING(o) + b->len, tail, tl);
    return o;
}

static int sb_bytesobj(SBuf *b, PyObject *o) {
    return o == NULL ? 0 : sb_add(b, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
}

/* A copy of a str (UTF-8) or NULL for None. */
static int dup_str(PyObject *o, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (o == Py_None) return 0;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL) return -1;
    char *d = PyMem_Malloc((size_t)n + 1);
    if (d == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(d, s, (size_t)n + 1);
    *out = d;
    *len = (size_t)n;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Types */

typedef struct Engine Engine;
typedef struct Client Client;
typedef struct Upstream Upstream;
typedef struct Pool Pool;
typedef struct Plan Plan;

struct Pool {
    PyObject_HEAD
    Upstream *idle[MAX_IDLE];
    int n;
};

typedef struct {
    char *exact, *suffix, *prefix, *port; /* as router._Host; NULL when unset */
    size_t el, sl, pl, portl;
} HostM;

typedef struct {
    int evaluable; /* only methods, hosts and prefix paths (or no paths): C can decide */
    int route;
    int has_methods;
    unsigned methods;
    int nhosts; /* -1: the route sets no hosts */
    HostM *hosts;
    int nprefixes; /* -1: no prefix paths (and, being evaluable, no paths at all) */
    char **prefixes;
    size_t *plens;
} Cand;

#define MAX_KEY_NAMES 16
#define MAX_PERIODS 6

struct KeyAuth {
    int n; /* key_names, lower-cased */
    char *names[MAX_KEY_NAMES];
    size_t lens[MAX_KEY_NAMES];
    int hide, preflight, in_header, in_query, in_body;
    PyObject *keys; /* consumers.keyauth: key -> (consumer, credential), the configuration's own dict */
    char *challenge; /* the WWW-Authenticate line */
    size_t chl;
    PyObject *no_key, *unauthorized, *duplicate; /* Kong's JSON bodies */
};

typedef struct {
    char *limit_hdr, *rem_hdr, *limit_text;
    size_t lhl, rhl, ltl;
    long long limit, window;
    int kind; /* 0..5: second minute hour day month year */
    PyObject *period; /* "second"... as in the counter keys */
} RLRow;

enum { BY_CONSUMER, BY_CREDENTIAL, BY_IP, BY_SERVICE };

struct RateLimit {
    PyObject *counters, *scope, *service_id, *error_body;
    int by, hide, error_code, nrows;
    Py_ssize_t max_keys;
    RLRow rows[MAX_PERIODS];
};

typedef struct {
    int fast;
    Pool *pool;
    PyObject *host, *port, *connect_to; /* for the Python connect helper */
    char *host_header, *svc_path;
    size_t hhl, spl;
    int strip, preserve, v1, retries;
    double read_to, write_to;
    struct KeyAuth *ka; /* key-auth, when the route has it (plugins.auth.KeyAuth) */
    struct RateLimit *rl; /* rate-limiting, local policy (plugins.ratelimit.RateLimiting) */
} RouteF;

struct Plan {
    PyObject_HEAD
    int ncands, nroutes;
    Cand *cands;
    RouteF *routes;
};

enum { K_OK, K_CONNECT, K_DNS, K_TIMEOUT, K_BAD, K_INTERNAL };
enum { X_NONE, X_UPSTREAM, X_CONNECTING };

typedef struct {
    int state;
    unsigned long serial;
    Plan *plan;
    int route;
    PyObject *data; /* the upstream request */
    Upstream *up;
    int attempt, method, keep_alive;
    double start, t0;
    PyObject *consumer_hdrs; /* key-auth's X-Consumer-* lines, sent after the other headers */
    PyObject *consumer_id, *cred_id; /* for rate-limiting's identifier */
    const char *hide; /* a header key-auth hides (hide_credentials) */
    size_t hidel;
    PyObject *rlh; /* rate-limiting's response headers (ctx.resp_headers) */
} Exch;

struct Client {
    PyObject_HEAD
    Engine *eng;
    PyObject *transport;
    PyObject *loop;
    PyObject *client_ip;
    PyObject *handoff; /* the Python protocol serving the connection after a hand-off */
    char *in;          /* bytes received and not yet parsed */
    size_t inlen, incap;
    Req *qhead, *qtail;
    int qlen;
    int busy, serving, paused, pending_handoff, released;
    int head_pending; /* the buffered bytes hold no whole head yet: parsed again only once a line ends */
    char ip[64]; /* client_ip as latin-1, for the X-Forwarded-For of the fast path */
    size_t ipl;
    Exch ex;
};

struct Upstream {
    PyObject_HEAD
    Engine *eng;
    Pool *pool;
    PyObject *transport;
    Client *client;   /* the request in flight */
    PyObject *stalled; /* write_timeout timer, only while the request lags in the socket's buffer */
    Upstream *dprev, *dnext;
    double deadline;
    int in_dl;
    int closed, head_only;
    /* response parser */
    int st, status, minor, conn_close, conn_keep, framed, cstate, reusable;
    long long clen, chunk_left;
    char *buf, *hdr, *body;
    size_t len, cap, hlen, hcap, blen, bcap;
};

struct Engine {
    PyObject_HEAD
    PyObject *gw, *begin, *conns, *loop, *request_type, *handoff, *connect, *pools, *fire, *timer;
    PyObject *status_line[NSTATUS];
    PyObject *err502, *err504, *err503; /* Kong's JSON bodies */
    PyObject *internal_ka, *internal_close; /* encode_response(_internal_error(), keep_alive, False) */
    Plan *plan;
    Py_ssize_t max_body;
    long long requests;
    long port;
    int closed;
    Upstream *dl_head, *dl_tail; /* read deadlines of the requests waiting on upstreams */
    double armed_at;
};

static PyTypeObject EngineType, ClientType, UpstreamType, PoolType, PlanType;
static PyObject *s_abort, *s_call_later, *s_cancel, *s_get_write_buffer_size, *s_fire, *s_stalled;

/* ------------------------------------------------------------------------------------------------ */
/* Plan: one configuration's router and fast routes, built by native.compile_plan */

static void plan_free_data(Plan *p) {
    for (int i = 0; i < p->ncands; i++) {
        Cand *c = &p->cands[i];
        for (int h = 0; h < c->nhosts; h++) {
            PyMem_Free(c->hosts[h].exact);
            PyMem_Free(c->hosts[h].suffix);
            PyMem_Free(c->hosts[h].prefix);
            PyMem_Free(c->hosts[h].port);
        }
        PyMem_Free(c->hosts);
        for (int k = 0; k < c->nprefixes; k++) PyMem_Free(c->prefixes[k]);
        PyMem_Free(c->prefixes);
        PyMem_Free(c->plens);
    }
    PyMem_Free(p->cands);
    p->cands = NULL;
    p->ncands = 0;
    for (int i = 0; i < p->nroutes; i++) {
        RouteF *r = &p->routes[i];
        Py_XDECREF(r->pool);
        Py_XDECREF(r->host);
        Py_XDECREF(r->port);
        Py_XDECREF(r->connect_to);
        PyMem_Free(r->host_header);
        PyMem_Free(r->svc_path);
        if (r->ka != NULL) {
            for (int k = 0; k < r->ka->n; k++) PyMem_Free(r->ka->names[k]);
            Py_XDECREF(r->ka->keys);
            PyMem_Free(r->ka->challenge);
            Py_XDECREF(r->ka->no_key);
            Py_XDECREF(r->ka->unauthorized);
            Py_XDECREF(r->ka->duplicate);
            PyMem_Free(r->ka);
        }
        if (r->rl != NULL) {
            for (int k = 0; k < r->rl->nrows; k++) {
                RLRow *w = &r->rl->rows[k];
                PyMem_Free(w->limit_hdr);
                PyMem_Free(w->rem_hdr);
                PyMem_Free(w->limit_text);
                Py_XDECREF(w->period);
            }
            Py_XDECREF(r->rl->counters);
            Py_XDECREF(r->rl->scope);
            Py_XDECREF(r->rl->service_id);
            Py_XDECREF(r->rl->error_body);
            PyMem_Free(r->rl);
        }
    }
    PyMem_Free(p->routes);
    p->routes = NULL;
    p->nroutes = 0;
}

static void plan_dealloc(Plan *p) {
    plan_free_data(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int method_index(PyObject *s) {
    for (int m = 0; m < M_COUNT; m++)
        if (PyUnicode_CompareWithASCIIString(s, METHOD_NAMES[m]) == 0) return m;
    return -1;
}

#define KEEP(field, value) \
    do {                     \
        Py_INCREF(value);    \
        (field) = (value);   \
    } while (0)

/* key-auth: (key_names, hide_credentials, run_on_preflight, key_in_header, key_in_query, key_in_body,
 *            challenge, consumers.keyauth, no_key_body, unauthorized_body, duplicate_body) */
static int plan_keyauth(RouteF *r, PyObject *t) {
    struct KeyAuth *ka = PyMem_Calloc(1, sizeof *ka);
    if (ka == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    r->ka = ka;
    PyObject *names, *ch, *keys, *b1, *b2, *b3;
    if (!PyArg_ParseTuple(t, "O!pppppUO!SSS", &PyList_Type, &names, &ka->hide, &ka->preflight, &ka->in_header,
                          &ka->in_query, &ka->in_body, &ch, &PyDict_Type, &keys, &b1, &b2, &b3))
        return -1;
    KEEP(ka->keys, keys);
    KEEP(ka->no_key, b1);
    KEEP(ka->unauthorized, b2);
    KEEP(ka->duplicate, b3);
    if (dup_str(ch, &ka->challenge, &ka->chl) < 0) return -1;
    if (PyList_GET_SIZE(names) > MAX_KEY_NAMES) {
        PyErr_SetString(PyExc_ValueError, "too many key_names");
        return -1;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(names); k++) {
        ka->n = (int)k + 1;
        if (dup_str(PyList_GET_ITEM(names, k), &ka->names[k], &ka->lens[k]) < 0) return -1;
    }
    return 0;
}

/* rate-limiting: (COUNTERS, scope, limit_by, service_id, hide_client_headers, error_code, error_body, max_keys,
 *                 [(period, limit, limit header, limit text, remaining header, window, kind)]) */
static int plan_ratelimit(RouteF *r, PyObject *t) {
    struct RateLimit *rl = PyMem_Calloc(1, sizeof *rl);
    if (rl == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    r->rl = rl;
    PyObject *counters, *scope, *sid, *body, *rows;
    if (!PyArg_ParseTuple(t, "OUiOpiSnO!", &counters, &scope, &rl->by, &sid, &rl->hide, &rl->error_code, &body,
                          &rl->max_keys, &PyList_Type, &rows))
        return -1;
    KEEP(rl->counters, counters);
    KEEP(rl->scope, scope);
    KEEP(rl->service_id, sid);
    KEEP(rl->error_body, body);
    if (PyList_GET_SIZE(rows) > MAX_PERIODS || PyList_GET_SIZE(rows) == 0) {
        PyErr_SetString(PyExc_ValueError, "1 to 6 periods");
        return -1;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(rows); k++) {
        RLRow *w = &rl->rows[k];
        rl->nrows = (int)k + 1;
        PyObject *period, *lh, *lt, *rh;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(rows, k), "ULOOOLi", &period, &w->limit, &lh, &lt, &rh, &w->window,
                              &w->kind))
            return -1;
        KEEP(w->period, period);
        if (dup_str(lh, &w->limit_hdr, &w->lhl) < 0 || dup_str(lt, &w->limit_text, &w->ltl) < 0 ||
            dup_str(rh, &w->rem_hdr, &w->rhl) < 0)
            return -1;
    }
    return 0;
}

/* Plan(cands, routes):
 *   cands: [(evaluable, route_index, methods | None, [(exact, suffix, prefix, port)] | None, [prefix] | None)]
 *   routes: [(fast, pool, host, port, connect_timeout_s, host_header, service_path | None, strip_path,
 *             preserve_host, v1, retries, read_timeout_s, write_timeout_s)] */
static int plan_init(Plan *p, PyObject *args, PyObject *kw UNUSED) {
    PyObject *cands, *routes;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &cands, &PyList_Type, &routes)) return -1;
    plan_free_data(p);
    Py_ssize_t nr = PyList_GET_SIZE(routes), nc = PyList_GET_SIZE(cands);
    p->routes = PyMem_Calloc((size_t)nr + 1, sizeof(RouteF));
    p->cands = PyMem_Calloc((size_t)nc + 1, sizeof(Cand));
    if (p->routes == NULL || p->cands == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < nr; i++) {
        RouteF *r = &p->routes[i];
        p->nroutes = (int)i + 1;
        PyObject *pool, *host, *port, *cto, *hh, *sp, *ka, *rl;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(routes, i), "pOOOOOOpppiddOO", &r->fast, &pool, &host, &port, &cto,
                              &hh, &sp, &r->strip, &r->preserve, &r->v1, &r->retries, &r->read_to, &r->write_to,
                              &ka, &rl))
            return -1;
        if (ka != Py_None && plan_keyauth(r, ka) < 0) return -1;
        if (rl != Py_None && plan_ratelimit(r, rl) < 0) return -1;
        if (pool != Py_None) {
            if (!PyObject_TypeCheck(pool, &PoolType)) {
                PyErr_SetString(PyExc_TypeError, "pool must be a Pool");
                return -1;
            }
            Py_INCREF(pool);
            r->pool = (Pool *)pool;
        }
        Py_INCREF(host);
        r->host = host;
        Py_INCREF(port);
        r->port = port;
        Py_INCREF(cto);
        r->connect_to = cto;
        if (dup_str(hh, &r->host_header, &r->hhl) < 0 || dup_str(sp, &r->svc_path, &r->spl) < 0) return -1;
        if (r->fast && r->pool == NULL) r->fast = 0;
    }
    for (Py_ssize_t i = 0; i < nc; i++) {
        Cand *c = &p->cands[i];
        c->nhosts = -1;
        c->nprefixes = -1;
        p->ncands = (int)i + 1;
        PyObject *methods, *hosts, *prefixes;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(cands, i), "piOOO", &c->evaluable, &c->route, &methods, &hosts,
                              &prefixes))
            return -1;
        if (c->route < 0 || c->route >= p->nroutes) {
            PyErr_SetString(PyExc_ValueError, "route index out of range");
            return -1;
        }
        if (methods != Py_None) {
            PyObject *seq = PySequence_Fast(methods, "methods");
            if (seq == NULL) return -1;
            c->has_methods = 1;
            for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
                PyObject *m = PySequence_Fast_GET_ITEM(seq, k);
                int mi = PyUnicode_Check(m) ? method_index(m) : -1;
                if (mi >= 0) c->methods |= 1u << mi; /* another method never matches a request parsed here */
            }
            Py_DECREF(seq);
        }
        if (hosts != Py_None) {
            Py_ssize_t nh = PySequence_Length(hosts);
            if (nh < 0) return -1;
            c->hosts = PyMem_Calloc((size_t)nh + 1, sizeof(HostM));
            if (c->hosts == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            c->nhosts = 0;
            for (Py_ssize_t k = 0; k < nh; k++) {
                PyObject *t = PySequence_GetItem(hosts, k);
                if (t == NULL) return -1;
                PyObject *ex, *su, *pr, *po;
                HostM *h = &c->hosts[k];
                c->nhosts = (int)k + 1;
                int ok = PyArg_ParseTuple(t, "OOOO", &ex, &su, &pr, &po) && dup_str(ex, &h->exact, &h->el) == 0 &&
                         dup_str(su, &h->suffix, &h->sl) == 0 && dup_str(pr, &h->prefix, &h->pl) == 0 &&
                         dup_str(po, &h->port, &h->portl) == 0;
                Py_DECREF(t);
                if (!ok) return -1;
            }
        }
        if (prefixes != Py_None) {
            Py_ssize_t np = PySequence_Length(prefixes);
            if (np < 0) return -1;
            c->prefixes = PyMem_Calloc((size_t)np + 1, sizeof(char *));
            c->plens = PyMem_Calloc((size_t)np + 1, sizeof(size_t));
            if (c->prefixes == NULL || c->plens == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            c->nprefixes = 0;
            for (Py_ssize_t k = 0; k < np; k++) {
                PyObject *s = PySequence_GetItem(prefixes, k);
                if (s == NULL) return -1;
                c->nprefixes = (int)k + 1;
                int rc = dup_str(s, &c->prefixes[k], &c->plens[k]);
                Py_DECREF(s);
                if (rc < 0) return -1;
            }
        }
    }
    return 0;
}

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pitwall.traffic.gateway._gwfast.Plan",
    .tp_basicsize = sizeof(Plan),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Plan(cands, routes): one configuration's router candidates and fast routes",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)plan_init,
    .tp_dealloc = (destructor)plan_dealloc,
};

/* The header ``name`` (lower-case literal) of ``r``: its index, how many times it was sent. */
static int req_find(Req *r, const char *name, int *count) {
    size_t nl = strlen(name);
    int first = -1;
    *count = 0;
    for (int k = 0; k < r->nh; k++)
        if (r->h[k].nl == nl && ieq(r->buf + r->h[k].no, nl, name)) {
            if (first < 0) first = k;
            (*count)++;
        }
    return first;
}

static int host_matches(HostM *h, const char *host, size_t hl, const char *port, size_t portl, int has_port) {
    if (h->port != NULL && (!has_port || portl != h->portl || memcmp(port, h->port, portl) != 0)) return 0;
    if (h->exact != NULL) return hl == h->el && memcmp(host, h->exact, hl) == 0;
    if (h->suffix != NULL) return hl > h->sl && memcmp(host + hl - h->sl, h->suffix, h->sl) == 0;
    return h->prefix != NULL && hl > h->pl && memcmp(host, h->prefix, h->pl) == 0;
}

#define R_DELEGATE (-1)
/* Router.find for ``r``: the route index and matched prefix, or R_DELEGATE when Python must decide
 * (no match: the 404 is Python's; a candidate C cannot evaluate comes first; an unusual Host). */
static int plan_find(Plan *p, Req *r, const char **matched, size_t *ml) {
    int hc;
    int hi = req_find(r, "host", &hc);
    if (hc > 1) return R_DELEGATE;
    char host[256];
    size_t hl = 0, portl = 0;
    const char *port = NULL;
    int has_port = 0;
    if (hi >= 0) {
        const char *v = r->buf + r->h[hi].vo;
        size_t vl = r->h[hi].vl;
        if (vl >= sizeof host || (vl && v[0] == '[')) return R_DELEGATE;
        for (size_t k = 0; k < vl; k++) host[k] = (char)lower((unsigned char)v[k]);
        const char *colon = memchr(host, ':', vl); /* router._split_host: partition at the first ":" */
        if (colon) {
            hl = (size_t)(colon - host);
            port = colon + 1;
            portl = vl - hl - 1;
            has_port = 1;
        } else {
            hl = vl;
        }
    }
    const char *path = r->buf + r->target_off;
    size_t pl = r->path_len;
    for (int i = 0; i < p->ncands; i++) {
        Cand *c = &p->cands[i];
        if (!c->evaluable) return R_DELEGATE;
        if (c->has_methods && !(c->methods & (1u << r->method))) continue;
        if (c->nhosts >= 0) {
            int ok = 0;
            for (int k = 0; k < c->nhosts && !ok; k++) ok = host_matches(&c->hosts[k], host, hl, port, portl, has_port);
            if (!ok) continue;
        }
        if (c->nprefixes >= 0) {
            int found = -1;
            for (int k = 0; k < c->nprefixes && found < 0; k++)
                if (pl >= c->plens[k] && memcmp(path, c->prefixes[k], c->plens[k]) == 0) found = k;
            if (found < 0) continue;
            *matched = c->prefixes[found];
            *ml = c->plens[found];
        } else {
            *matched = "";
            *ml = 0;
        }
        return c->route;
    }
    return R_DELEGATE;
}

/* ------------------------------------------------------------------------------------------------ */
/* Pool: idle keep-alive connections to one (host, port) */

static int pool_traverse(Pool *p, visitproc visit, void *arg) {
    for (int i = 0; i < p->n; i++) Py_VISIT(p->idle[i]);
    return 0;
}

static int pool_clear(Pool *p) {
    while (p->n > 0) {
        Upstream *u = p->idle[--p->n];
        Py_DECREF(u);
    }
    return 0;
}

static void pool_dealloc(Pool *p) {
    PyObject_GC_UnTrack(p);
    pool_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *pool_len(Pool *p, PyObject *unused UNUSED) { return PyLong_FromLong(p->n); }

static PyMethodDef pool_methods[] = {{"idle", (PyCFunction)pool_len, METH_NOARGS, "idle connections held"}, {NULL}};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pitwall.traffic.gateway._gwfast.Pool",
    .tp_basicsize = sizeof(Pool),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "idle upstream connections to one (host, port)",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_traverse = (traverseproc)pool_traverse,
    .tp_clear = (inquiry)pool_clear,
    .tp_methods = pool_methods,
};

/* A new reference to an open idle connection, or NULL. */
static Upstream *pool_take(Pool *p) {
    while (p->n > 0) {
        Upstream *u = p->idle[--p->n];
        if (!u->closed) return u;
        Py_DECREF(u);
    }
    return NULL;
}

static void up_close(Upstream *u, int abort) {
    u->closed = 1;
    if (u->transport != NULL) {
        PyObject *t = u->transport;
        Py_INCREF(t);
        PyObject *r = PyObject_CallMethodNoArgs(t, abort ? s_abort : s_close);
        if (r == NULL) PyErr_WriteUnraisable(t);
        else Py_DECREF(r);
        Py_DECREF(t);
    }
}

/* A connection whose request is over: back to its pool when it may serve another, else closed. */
static void pool_release(Upstream *u, int keep) {
    Pool *p = u->pool;
    if (keep && !u->closed && !u->eng->closed && p != NULL && p->n < MAX_IDLE) {
        Py_INCREF(u);
        p->idle[p->n++] = u;
        return;
    }
    up_close(u, 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* Read deadlines: one loop timer for the earliest (as upstream.Deadlines) */

static void dl_remove(Upstream *u) {
    if (!u->in_dl) return;
    Engine *e = u->eng;
    if (u->dprev) u->dprev->dnext = u->dnext;
    else e->dl_head = u->dnext;
    if (u->dnext) u->dnext->dprev = u->dprev;
    else e->dl_tail = u->dprev;
    u->dprev = u->dnext = NULL;
    u->in_dl = 0;
}

static void dl_arm(Engine *e, double at) {
    if (e->timer != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(e->timer, s_cancel);
        if (r == NULL) PyErr_WriteUnraisable(e->timer);
        else Py_DECREF(r);
        Py_CLEAR(e->timer);
    }
    e->armed_at = at;
    double delay = at - now_s();
    PyObject *d = PyFloat_FromDouble(delay > 0 ? delay : 0);
    if (d == NULL) {
        PyErr_WriteUnraisable((PyObject *)e);
        return;
    }
    e->timer = PyObject_CallMethodObjArgs(e->loop, s_call_later, d, e->fire, NULL);
    Py_DECREF(d);
    if (e->timer == NULL) PyErr_WriteUnraisable((PyObject *)e);
}

static void dl_add(Upstream *u, double timeout) {
    Engine *e = u->eng;
    dl_remove(u);
    u->deadline = now_s() + timeout;
    u->dprev = e->dl_tail;
    u->dnext = NULL;
    if (e->dl_tail) e->dl_tail->dnext = u;
    else e->dl_head = u;
    e->dl_tail = u;
    u->in_dl = 1;
    if (u->deadline < e->armed_at) dl_arm(e, u->deadline);
}

static void up_fail(Upstream *u, int kind);

static PyObject *engine_fire(Engine *e, PyObject *unused UNUSED) {
    Py_CLEAR(e->timer);
    e->armed_at = INFINITY;
    double now = now_s();
    /* The expired ones first, then their callbacks (which may add new deadlines). */
    Py_ssize_t n = 0;
    for (Upstream *u = e->dl_head; u; u = u->dnext)
        if (u->deadline <= now) n++;
    if (n) {
        Upstream **due = PyMem_Malloc((size_t)n * sizeof(Upstream *));
        if (due == NULL) return PyErr_NoMemory();
        Py_ssize_t k = 0;
        for (Upstream *u = e->dl_head, *next; u; u = next) {
            next = u->dnext;
            if (u->deadline <= now && k < n) {
                dl_remove(u);
                Py_INCREF(u);
                due[k++] = u;
            }
        }
        for (Py_ssize_t i = 0; i < k; i++) {
            up_fail(due[i], K_TIMEOUT);
            Py_DECREF(due[i]);
        }
        PyMem_Free(due);
    }
    if (e->dl_head && e->timer == NULL) {
        double min = INFINITY;
        for (Upstream *u = e->dl_head; u; u = u->dnext)
            if (u->deadline < min) min = u->deadline;
        now = now_s();
        /* never re-armed in the past: the loop's clock may round just short of the deadline */
        dl_arm(e, min > now + 0.001 ? min : now + 0.001);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------------ */
/* Engine */

static int engine_traverse(Engine *e, visitproc visit, void *arg) {
    Py_VISIT(e->gw);
    Py_VISIT(e->begin);
    Py_VISIT(e->conns);
    Py_VISIT(e->loop);
    Py_VISIT(e->request_type);
    Py_VISIT(e->handoff);
    Py_VISIT(e->connect);
    Py_VISIT(e->pools);
    Py_VISIT(e->fire);
    Py_VISIT(e->timer);
    Py_VISIT(e->plan);
    return 0;
}

static int engine_clear(Engine *e) {
    Py_CLEAR(e->gw);
    Py_CLEAR(e->begin);
    Py_CLEAR(e->conns);
    Py_CLEAR(e->loop);
    Py_CLEAR(e->request_type);
    Py_CLEAR(e->handoff);
    Py_CLEAR(e->connect);
    Py_CLEAR(e->pools);
    Py_CLEAR(e->fire);
    Py_CLEAR(e->timer);
    Py_CLEAR(e->plan);
    for (int i = 0; i < NSTATUS; i++) Py_CLEAR(e->status_line[i]);
    Py_CLEAR(e->err502);
    Py_CLEAR(e->err504);
    Py_CLEAR(e->err503);
    Py_CLEAR(e->internal_ka);
    Py_CLEAR(e->internal_close);
    return 0;
}

static void engine_dealloc(Engine *e) {
    PyObject_GC_UnTrack(e);
    engine_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

#define SETREF_NEW(field, value) \
    do {                         \
        Py_INCREF(value);        \
        Py_XSETREF(field, value); \
    } while (0)

static PyObject *dict_get_int(PyObject *d, long key) { /* borrowed, or NULL */
    PyObject *k = PyLong_FromLong(key);
    if (k == NULL) return NULL;
    PyObject *v = PyDict_GetItemWithError(d, k);
    Py_DECREF(k);
    return v;
}

/* Engine(gw, request_type, handoff, max_body_bytes, connect, status_lines, errors, internal) */
static int engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"gw", "request_type", "handoff", "max_body_bytes", "connect", "status_lines",
                             "errors", "internal", NULL};
    PyObject *gw, *rt, *ho, *conn, *lines, *errors, *internal;
    Py_ssize_t mb;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOnOO!O!O!", kwlist, &gw, &rt, &ho, &mb, &conn, &PyDict_Type,
                                     &lines, &PyDict_Type, &errors, &PyTuple_Type, &internal))
        return -1;
    PyObject *begin = PyObject_GetAttr(gw, s_begin);
    if (begin == NULL) return -1;
    PyObject *conns = PyObject_GetAttr(gw, s_conns);
    if (conns == NULL) {
        Py_DECREF(begin);
        return -1;
    }
    engine_clear(e);
    e->begin = begin;
    e->conns = conns;
    SETREF_NEW(e->gw, gw);
    SETREF_NEW(e->request_type, rt);
    SETREF_NEW(e->handoff, ho);
    SETREF_NEW(e->connect, conn);
    e->max_body = mb;
    e->armed_at = INFINITY;
    if ((e->pools = PyDict_New()) == NULL) return -1;
    if ((e->fire = PyObject_GetAttr((PyObject *)e, s_fire)) == NULL) return -1;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(lines, &pos, &k, &v)) {
        long code = PyLong_AsLong(k);
        if (code == -1 && PyErr_Occurred()) return -1;
        if (code >= 0 && code < NSTATUS && PyBytes_Check(v)) SETREF_NEW(e->status_line[code], v);
    }
    PyObject *b502 = dict_get_int(errors, 502), *b504 = dict_get_int(errors, 504), *b503 = dict_get_int(errors, 503);
    if (!b502 || !b504 || !b503 || !PyBytes_Check(b502) || !PyBytes_Check(b504) || !PyBytes_Check(b503) ||
        PyTuple_GET_SIZE(internal) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(internal, 0)) ||
        !PyBytes_Check(PyTuple_GET_ITEM(internal, 1))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "errors needs 502, 503, 504 bodies; internal two bytes");
        return -1;
    }
    SETREF_NEW(e->err502, b502);
    SETREF_NEW(e->err504, b504);
    SETREF_NEW(e->err503, b503);
    SETREF_NEW(e->internal_ka, PyTuple_GET_ITEM(internal, 0));
    SETREF_NEW(e->internal_close, PyTuple_GET_ITEM(internal, 1));
    return 0;
}

static PyObject *engine_start(Engine *e, PyObject *args) {
    PyObject *loop;
    if (!PyArg_ParseTuple(args, "O", &loop)) return NULL;
    SETREF_NEW(e->loop, loop);
    e->closed = 0;
    Py_RETURN_NONE;
}

static PyObject *engine_set_port(Engine *e, PyObject *arg) {
    long port = PyLong_AsLong(arg);
    if (port == -1 && PyErr_Occurred()) return NULL;
    e->port = port;
    Py_RETURN_NONE;
}

/* set_plan(plan | None): swapped whole; a request in flight keeps the plan it started with. */
static PyObject *engine_set_plan(Engine *e, PyObject *arg) {
    if (arg != Py_None && !PyObject_TypeCheck(arg, &PlanType)) {
        PyErr_SetString(PyExc_TypeError, "set_plan(Plan | None)");
        return NULL;
    }
    if (arg == Py_None) Py_CLEAR(e->plan);
    else SETREF_NEW(e->plan, (Plan *)arg);
    Py_RETURN_NONE;
}

/* pool(host, port): the pool of idle connections to (host, port), the same across reloads. */
static PyObject *engine_pool(Engine *e, PyObject *args) {
    PyObject *host, *port;
    if (!PyArg_ParseTuple(args, "UO!", &host, &PyLong_Type, &port)) return NULL;
    PyObject *key = PyTuple_Pack(2, host, port);
    if (key == NULL) return NULL;
    PyObject *p = PyDict_GetItemWithError(e->pools, key);
    if (p != NULL) {
        Py_DECREF(key);
        Py_INCREF(p);
        return p;
    }
    if (PyErr_Occurred() || (p = PyObject_CallNoArgs((PyObject *)&PoolType)) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    int rc = PyDict_SetItem(e->pools, key, p);
    Py_DECREF(key);
    if (rc < 0) {
        Py_DECREF(p);
        return NULL;
    }
    return p;
}

/* close(): the server stops: idle connections close, none is pooled any more. */
static PyObject *engine_close(Engine *e, PyObject *unused UNUSED) {
    e->closed = 1;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(e->pools, &pos, &k, &v)) {
        Pool *p = (Pool *)v;
        Upstream *u;
        while ((u = pool_take(p)) != NULL) {
            up_close(u, 0);
            Py_DECREF(u);
        }
    }
    if (e->timer != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(e->timer, s_cancel);
        Py_XDECREF(r);
        PyErr_Clear();
        Py_CLEAR(e->timer);
        e->armed_at = INFINITY;
    }
    Py_RETURN_NONE;
}

static PyObject *engine_waiting(Engine *e, PyObject *unused UNUSED) {
    long n = 0;
    for (Upstream *u = e->dl_head; u; u = u->dnext) n++;
    return PyLong_FromLong(n);
}

static PyMethodDef engine_methods[] = {
    {"start", (PyCFunction)engine_start, METH_VARARGS, "start(loop): the loop its connections run on"},
    {"set_port", (PyCFunction)engine_set_port, METH_O, "set_port(port): the listener's port (X-Forwarded-Port)"},
    {"set_plan", (PyCFunction)engine_set_plan, METH_O, "set_plan(plan | None): None delegates every request"},
    {"pool", (PyCFunction)engine_pool, METH_VARARGS, "pool(host, port) -> Pool"},
    {"close", (PyCFunction)engine_close, METH_NOARGS, "close the idle upstream connections"},
    {"waiting", (PyCFunction)engine_waiting, METH_NOARGS, "requests waiting on an upstream's answer"},
    {"_fire", (PyCFunction)engine_fire, METH_NOARGS, "the read-deadline timer"},
    {NULL}};

static PyMemberDef engine_members[] = {
    {"requests", T_LONGLONG, offsetof(Engine, requests), READONLY, "requests served in C"},
    {"loop", T_OBJECT, offsetof(Engine, loop), READONLY, NULL},
    {"plan", T_OBJECT, offsetof(Engine, plan), READONLY, NULL},
    {NULL}};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pitwall.traffic.gateway._gwfast.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Engine(...): what one gateway's C connections share (plan, pools, deadlines)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_traverse = (traverseproc)engine_traverse,
    .tp_clear = (inquiry)engine_clear,
    .tp_methods = engine_methods,
    .tp_members = engine_members,
};
/* ------------------------------------------------------------------------------------------------ */
/* Upstream: one upstream connection, one request at a time (as upstream._Conn) */

enum { U_HEAD, U_BODY_CL, U_CHUNKED, U_EOF, U_DONE };
enum { C_SIZE, C_DATA, C_DATA_CRLF, C_TRAILER };

static int up_traverse(Upstream *u, visitproc visit, void *arg) {
    Py_VISIT(u->eng);
    Py_VISIT(u->pool);
    Py_VISIT(u->transport);
    Py_VISIT(u->client);
    Py_VISIT(u->stalled);
    return 0;
}

static int up_clear(Upstream *u) {
    dl_remove(u);
    Py_CLEAR(u->pool);
    Py_CLEAR(u->transport);
    Py_CLEAR(u->client);
    Py_CLEAR(u->stalled);
    Py_CLEAR(u->eng);
    return 0;
}

static void up_dealloc(Upstream *u) {
    PyObject_GC_UnTrack(u);
    up_clear(u);
    PyMem_Free(u->buf);
    PyMem_Free(u->hdr);
    PyMem_Free(u->body);
    Py_TYPE(u)->tp_free((PyObject *)u);
}

static int up_init(Upstream *u, PyObject *args, PyObject *kw UNUSED) {
    PyObject *eng, *pool;
    if (!PyArg_ParseTuple(args, "O!O!", &EngineType, &eng, &PoolType, &pool)) return -1;
    SETREF_NEW(u->eng, (Engine *)eng);
    SETREF_NEW(u->pool, (Pool *)pool);
    return 0;
}

static void up_reset(Upstream *u) {
    u->st = U_HEAD;
    u->status = 0;
    u->minor = 1;
    u->conn_close = u->conn_keep = u->framed = 0;
    u->cstate = C_SIZE;
    u->reusable = 1;
    u->clen = -1;
    u->chunk_left = 0;
    u->len = u->hlen = u->blen = 0;
}

static void fast_upstream_done(Client *c, Upstream *u, int kind);

/* The request on ``u`` is over (answered, failed or abandoned): its timers go. */
static void up_finish(Upstream *u) {
    dl_remove(u);
    if (u->stalled != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(u->stalled, s_cancel);
        if (r == NULL) PyErr_WriteUnraisable(u->stalled);
        else Py_DECREF(r);
        Py_CLEAR(u->stalled);
    }
}

/* Hand the outcome to the waiting client, once; the connection goes back to its pool or closes. */
static void up_settle(Upstream *u, int kind) {
    Client *c = u->client;
    if (c == NULL) return;
    u->client = NULL; /* the reference moves to this function */
    up_finish(u);
    int keep = kind == K_OK && u->reusable && u->st == U_DONE &&
               (u->minor == 1 ? !u->conn_close : u->conn_keep);
    Py_INCREF(u);
    /* Released before the answer is written, as upstream_done does: the next pipelined request may take it. */
    if (kind == K_OK) pool_release(u, keep);
    else up_close(u, 1); /* drop what is unsent: half a request must not reach the upstream later */
    fast_upstream_done(c, u, kind);
    Py_DECREF(u);
    Py_DECREF(c);
}

static void up_fail(Upstream *u, int kind) {
    u->closed = 1;
    if (u->client == NULL) {
        up_close(u, 1);
        return;
    }
    up_settle(u, kind);
}

static int hop_by_hop(const char *n, size_t l) {
    switch (l) {
    case 7: return ieq(n, l, "trailer") || ieq(n, l, "upgrade");
    case 10: return ieq(n, l, "connection") || ieq(n, l, "keep-alive");
    case 14: return ieq(n, l, "content-length");
    case 16: return ieq(n, l, "proxy-connection");
    case 17: return ieq(n, l, "transfer-encoding");
    default: return 0;
    }
}

/* One header line (without its CRLF) of a response head or its trailers; -1: not HTTP. */
static int up_header_line(Upstream *u, const char *p, size_t n, int trailer) {
    size_t i = 0;
    while (i < n && TCHAR[(unsigned char)p[i]]) i++;
    if (i == 0 || i >= n || p[i] != ':') return -1;
    size_t nl = i++;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    const char *v = p + i;
    size_t vl = n - i;
    for (size_t k = 0; k < vl; k++) {
        unsigned char ch = (unsigned char)v[k];
        if (ch < 0x20 && ch != '\t') return -1;
        if (ch == 0x7f) return -1;
    }
    if (trailer) {
        /* framing in the trailers: llhttp (the Python path) fails the response */
        if ((nl == 14 && ieq(p, nl, "content-length")) || (nl == 17 && ieq(p, nl, "transfer-encoding"))) return -1;
    } else {
        if (nl == 14 && ieq(p, nl, "content-length")) {
            /* digits (leading zeros and trailing whitespace allowed, as llhttp), at most MAX_RESPONSE_BYTES + 1:
             * no overflow whatever the length */
            size_t e = vl;
            while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
            if (u->clen >= 0 || e == 0) return -1;
            long long x = 0;
            for (size_t k = 0; k < e; k++) {
                if (v[k] < '0' || v[k] > '9') return -1;
                x = x * 10 + (v[k] - '0');
                if (x > MAX_RESPONSE_BYTES) x = MAX_RESPONSE_BYTES + 1;
            }
            u->clen = x;
            if (u->framed != 2) u->framed = 1; /* with Transfer-Encoding too: not HTTP (below), not framed by length */
        } else if (nl == 17 && ieq(p, nl, "transfer-encoding")) {
            if (u->framed == 2 || !(vl >= 7 && ieq(v + vl - 7, 7, "chunked") && (vl == 7 || v[vl - 8] == ' ' ||
                                                                             v[vl - 8] == ',')))
                return -1; /* only a final "chunked" coding is framed here */
            u->framed = 2;
        } else if (nl == 10 && ieq(p, nl, "connection")) {
            if (has_token(v, vl, "close")) u->conn_close = 1;
            if (has_token(v, vl, "keep-alive")) u->conn_keep = 1;
        }
    }
    if (hop_by_hop(p, nl)) return 0;
    if (u->hlen + nl + vl + 4 > MAX_RESPONSE_HEAD) return -1;
    if (buf_append(&u->hdr, &u->hlen, &u->hcap, p, nl) < 0 || buf_append(&u->hdr, &u->hlen, &u->hcap, ": ", 2) < 0 ||
        buf_append(&u->hdr, &u->hlen, &u->hcap, v, vl) < 0 || buf_append(&u->hdr, &u->hlen, &u->hcap, "\r\n", 2) < 0)
        return -2;
    return 0;
}

/* Parse the head in u->buf; returns the bytes it takes, 0 when incomplete, -1 when not HTTP. */
static Py_ssize_t up_parse_head(Upstream *u) {
    const char *p = u->buf;
    size_t n = u->len;
    const char *end = n >= 4 ? memmem(p, n, "\r\n\r\n", 4) : NULL;
    if (end == NULL) {
        if (n >= 5 && memcmp(p, "HTTP/", 5) != 0) return -1;
        return n > MAX_RESPONSE_HEAD ? -1 : 0;
    }
    size_t hl = (size_t)(end - p) + 4;
    if (hl < 16 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ') return -1;
    u->minor = p[7] - '0';
    if (p[9] < '0' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9') return -1;
    u->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (p[12] != ' ' && p[12] != '\r') return -1;
    const char *line = memchr(p, '\n', hl);
    if (line == NULL || line[-1] != '\r') return -1;
    for (const char *q = p + 12; q < line - 1; q++)
        if ((unsigned char)*q < 0x20 && *q != '\t') return -1;
    const char *s = line + 1;
    const char *stop = p + hl - 2;
    while (s < stop) {
        const char *e = memchr(s, '\n', (size_t)(stop - s) + 1);
        if (e == NULL || e == s || e[-1] != '\r') return -1;
        int rc = up_header_line(u, s, (size_t)(e - 1 - s), 0);
        if (rc == -2) return -2;
        if (rc < 0) return -1;
        s = e + 1;
    }
    if (u->status < 100 || u->status == 101) return -1; /* an upgrade: not supported, as the Python path */
    return (Py_ssize_t)hl;
}

static int body_add(Upstream *u, const char *p, size_t n) {
    if (u->blen + n > MAX_RESPONSE_BYTES) return -1;
    return buf_append(&u->body, &u->blen, &u->bcap, p, n) < 0 ? -2 : 0;
}

/* Decode chunks from u->buf[*pos..); -1 not HTTP, -2 no memory, 1 message done, 0 more needed. */
static int up_chunks(Upstream *u, size_t *pos) {
    const char *p = u->buf;
    size_t n = u->len, i = *pos;
    int rc = 0;
    while (i < n) {
        if (u->cstate == C_SIZE || u->cstate == C_TRAILER) {
            const char *e = memchr(p + i, '\n', n - i);
            if (e == NULL) {
                if (n - i > 16384) rc = -1;
                break;
            }
            if (e == p + i || e[-1] != '\r') {
                rc = -1;
                break;
            }
            size_t ll = (size_t)(e - 1 - (p + i));
            if (u->cstate == C_SIZE) {
                long long size = 0;
                size_t k = 0;
                for (; k < ll; k++) {
                    char ch = p[i + k];
                    int d = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 :
                            (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
                    if (d < 0) break;
                    size = size * 16 + d;
                    if (size > MAX_RESPONSE_BYTES) { /* too big either way; leading zeros are fine, as llhttp */
                        rc = -1;
                        break;
                    }
                }
                if (rc) break;
                if (k == 0 || (k < ll && p[i + k] != ';')) {
                    rc = -1;
                    break;
                }
                i = (size_t)(e - p) + 1;
                if (size == 0) {
                    u->cstate = C_TRAILER;
                } else {
                    if (u->blen + (size_t)size > MAX_RESPONSE_BYTES) {
                        rc = -1;
                        break;
                    }
                    u->chunk_left = size;
                    u->cstate = C_DATA;
                }
            } else { /* trailers: llhttp reports them as headers, which the Python path passes on */
                if (ll == 0) {
                    i = (size_t)(e - p) + 1;
                    rc = 1;
                    break;
                }
                int r = up_header_line(u, p + i, ll, 1);
                if (r < 0) {
                    rc = r == -2 ? -2 : -1;
                    break;
                }
                i = (size_t)(e - p) + 1;
            }
        } else if (u->cstate == C_DATA) {
            size_t take = n - i < (size_t)u->chunk_left ? n - i : (size_t)u->chunk_left;
            int r = body_add(u, p + i, take);
            if (r < 0) {
                rc = r;
                break;
            }
            i += take;
            u->chunk_left -= (long long)take;
            if (u->chunk_left == 0) u->cstate = C_DATA_CRLF;
        } else { /* C_DATA_CRLF */
            if (n - i < 2) break;
            if (p[i] != '\r' || p[i + 1] != '\n') {
                rc = -1;
                break;
            }
            i += 2;
            u->cstate = C_SIZE;
        }
    }
    *pos = i;
    return rc;
}

static PyObject *up_connection_made(Upstream *u, PyObject *transport) {
    SETREF_NEW(u->transport, transport);
    Py_RETURN_NONE;
}

static void up_complete(Upstream *u, size_t rest) {
    u->st = U_DONE;
    if (rest) u->reusable = 0; /* bytes after the response: not an HTTP conversation to reuse */
    up_settle(u, K_OK);
}

static PyObject *up_data_received(Upstream *u, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    const char *p = view.buf;
    size_t n = (size_t)view.len;
    if (u->client == NULL || u->st == U_DONE) { /* nothing asked: not a conversation to trust any more */
        PyBuffer_Release(&view);
        up_close(u, 1);
        Py_RETURN_NONE;
    }
    Py_INCREF(u);
    int rc = 0;
    if (u->st == U_BODY_CL || u->st == U_EOF) { /* the body goes straight to its buffer */
        size_t want = u->st == U_BODY_CL ? (size_t)u->clen - u->blen : n;
        size_t take = n < want ? n : want;
        rc = body_add(u, p, take);
        if (rc == 0 && u->st == U_BODY_CL && u->blen == (size_t)u->clen) up_complete(u, n - take);
        goto out;
    }
    /* A head ends with a line: more of one not yet ended is not parsed again from the head's start. */
    int skip = u->st == U_HEAD && u->len > 0 && memchr(p, '\n', n) == NULL && u->len + n <= MAX_RESPONSE_HEAD;
    if (buf_append(&u->buf, &u->len, &u->cap, p, n) < 0) {
        rc = -2;
        goto out;
    }
    if (skip) goto out;
    size_t pos = 0;
    if (u->st == U_HEAD) {
        Py_ssize_t hl = up_parse_head(u);
        while (hl > 0 && u->status < 200) {
            /* an interim response (100 Continue, 102, 103 Early Hints; 101 was refused): not the answer,
             * which follows on the same connection, as nginx and Kong read it */
            memmove(u->buf, u->buf + hl, u->len - (size_t)hl);
            u->len -= (size_t)hl;
            u->status = 0;
            u->conn_close = u->conn_keep = u->framed = 0;
            u->clen = -1;
            u->hlen = 0;
            hl = up_parse_head(u);
        }
        if (hl < 0) {
            rc = (int)hl;
            goto out;
        }
        if (hl == 0) goto out;
        pos = (size_t)hl;
        if (u->framed == 2 && u->clen >= 0) { /* both framings: not HTTP, even for a head without a body */
            rc = -1;
            goto out;
        }
        if (u->head_only) { /* a response to HEAD has no body whatever its framing says: closed, not pooled */
            u->closed = 1;
            u->st = U_DONE;
            up_settle(u, K_OK);
            goto out;
        }
        if (u->status == 204 || u->status == 304) {
            up_complete(u, u->len - pos);
            goto out;
        }
        if (u->framed == 2) {
            u->st = U_CHUNKED;
        } else if (u->clen >= 0) {
            if (u->clen > MAX_RESPONSE_BYTES) {
                rc = -1;
                goto out;
            }
            u->st = U_BODY_CL;
            size_t have = u->len - pos, take = have < (size_t)u->clen ? have : (size_t)u->clen;
            rc = body_add(u, u->buf + pos, take);
            pos += take;
            if (rc == 0 && u->blen == (size_t)u->clen) up_complete(u, u->len - pos);
            u->len = 0;
            goto out;
        } else {
            u->st = U_EOF; /* delimited by the close of the connection */
            rc = body_add(u, u->buf + pos, u->len - pos);
            u->len = 0;
            goto out;
        }
    }
    if (u->st == U_CHUNKED) {
        int r = up_chunks(u, &pos);
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (r == 1) {
            up_complete(u, u->len - pos);
            goto out;
        }
        if (pos) {
            memmove(u->buf, u->buf + pos, u->len - pos);
            u->len -= pos;
        }
    }
out:
    PyBuffer_Release(&view);
    if (rc == -2) {
        PyErr_Clear();
        up_fail(u, K_BAD);
    } else if (rc < 0) {
        up_fail(u, K_BAD);
    }
    Py_DECREF(u);
    Py_RETURN_NONE;
}

static PyObject *up_connection_lost(Upstream *u, PyObject *exc UNUSED) {
    u->closed = 1;
    Py_INCREF(u);
    if (u->client != NULL) {
        if (u->st == U_EOF) { /* a body delimited by the close of the connection ends here */
            u->st = U_DONE;
            u->reusable = 0;
            up_settle(u, K_OK);
        } else {
            up_settle(u, K_BAD);
        }
    }
    dl_remove(u);
    Py_CLEAR(u->transport);
    Py_DECREF(u);
    Py_RETURN_NONE;
}

static PyObject *up_stalled(Upstream *u, PyObject *unused UNUSED) {
    Py_CLEAR(u->stalled);
    if (u->transport == NULL || u->client == NULL) Py_RETURN_NONE;
    PyObject *r = PyObject_CallMethodNoArgs(u->transport, s_get_write_buffer_size);
    if (r == NULL) return NULL;
    long size = PyLong_AsLong(r);
    Py_DECREF(r);
    if (size == -1 && PyErr_Occurred()) return NULL;
    if (size > 0) up_fail(u, K_TIMEOUT);
    Py_RETURN_NONE;
}

static PyObject *up_noop(Upstream *u UNUSED, PyObject *unused UNUSED) { Py_RETURN_NONE; }

static PyMethodDef up_methods[] = {
    {"connection_made", (PyCFunction)up_connection_made, METH_O, NULL},
    {"connection_lost", (PyCFunction)up_connection_lost, METH_O, NULL},
    {"data_received", (PyCFunction)up_data_received, METH_O, NULL},
    {"eof_received", (PyCFunction)up_noop, METH_NOARGS, NULL},
    {"pause_writing", (PyCFunction)up_noop, METH_NOARGS, NULL},
    {"resume_writing", (PyCFunction)up_noop, METH_NOARGS, NULL},
    {"_stalled", (PyCFunction)up_stalled, METH_NOARGS, NULL},
    {NULL}};

static PyMemberDef up_members[] = {
    {"closed", T_INT, offsetof(Upstream, closed), READONLY, NULL},
    {"transport", T_OBJECT, offsetof(Upstream, transport), READONLY, NULL},
    {NULL}};

static PyTypeObject UpstreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pitwall.traffic.gateway._gwfast.Upstream",
    .tp_basicsize = sizeof(Upstream),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Upstream(engine, pool): the asyncio Protocol of one upstream connection",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)up_init,
    .tp_dealloc = (destructor)up_dealloc,
    .tp_traverse = (traverseproc)up_traverse,
    .tp_clear = (inquiry)up_clear,
    .tp_methods = up_methods,
    .tp_members = up_members,
};
/* ------------------------------------------------------------------------------------------------ */
/* Client */

static int client_traverse(Client *c, visitproc visit, void *arg) {
    Py_VISIT(c->eng);
    Py_VISIT(c->transport);
    Py_VISIT(c->loop);
    Py_VISIT(c->client_ip);
    Py_VISIT(c->handoff);
    Py_VISIT(c->ex.plan);
    Py_VISIT(c->ex.data);
    Py_VISIT(c->ex.up);
    Py_VISIT(c->ex.consumer_hdrs);
    Py_VISIT(c->ex.consumer_id);
    Py_VISIT(c->ex.cred_id);
    Py_VISIT(c->ex.rlh);
    return 0;
}

static void ex_end(Client *c) {
    Exch *x = &c->ex;
    x->state = X_NONE;
    Py_CLEAR(x->plan);
    Py_CLEAR(x->data);
    Py_CLEAR(x->up);
    Py_CLEAR(x->consumer_hdrs);
    Py_CLEAR(x->consumer_id);
    Py_CLEAR(x->cred_id);
    Py_CLEAR(x->rlh);
    x->hide = NULL;
    x->hidel = 0;
}

static int client_clear(Client *c) {
    Py_CLEAR(c->eng);
    Py_CLEAR(c->transport);
    Py_CLEAR(c->loop);
    Py_CLEAR(c->client_ip);
    Py_CLEAR(c->handoff);
    ex_end(c);
    return 0;
}

static void client_free_queue(Client *c) {
    while (c->qhead) {
        Req *r = c->qhead;
        c->qhead = r->next;
        req_free(r);
    }
    c->qtail = NULL;
    c->qlen = 0;
}

static void client_dealloc(Client *c) {
    PyObject_GC_UnTrack(c);
    client_clear(c);
    client_free_queue(c);
    PyMem_Free(c->in);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int client_init(Client *c, PyObject *args, PyObject *kw UNUSED) {
    PyObject *eng;
    if (!PyArg_ParseTuple(args, "O!", &EngineType, &eng)) return -1;
    SETREF_NEW(c->eng, (Engine *)eng);
    PyObject *loop = ((Engine *)eng)->loop ? ((Engine *)eng)->loop : Py_None;
    SETREF_NEW(c->loop, loop);
    SETREF_NEW(c->client_ip, s_empty);
    return 0;
}

static void client_next(Client *c);

/* Hand the connection to a Python ``_ClientConn``, fed every byte not yet parsed, at once: as
 * without this module, a refusal is written as soon as it is parsed, while the requests before it
 * are still being answered here. Until they are (``released``), the Python connection is "busy":
 * what it parses waits in its queue, so every answer still goes out in order. */
static void client_do_handoff(Client *c) {
    c->pending_handoff = 0;
    PyObject *data = PyBytes_FromStringAndSize(c->in ? c->in : "", (Py_ssize_t)c->inlen);
    c->inlen = 0;
    if (data == NULL) {
        PyErr_WriteUnraisable((PyObject *)c);
        return;
    }
    int busy = c->busy || c->qhead != NULL;
    c->released = !busy;
    PyObject *h = PyObject_CallFunctionObjArgs(c->eng->handoff, (PyObject *)c, c->transport, data,
                                               c->paused ? Py_True : Py_False, busy ? Py_True : Py_False, NULL);
    Py_DECREF(data);
    c->paused = 0;
    if (h == NULL) {
        PyErr_WriteUnraisable((PyObject *)c);
        return;
    }
    Py_XSETREF(c->handoff, h);
}

static void client_enqueue(Client *c, Req *r) {
    if (c->qtail) c->qtail->next = r;
    else c->qhead = r;
    c->qtail = r;
    c->qlen++;
    if (c->qlen >= MAX_PIPELINE && c->transport != NULL && !c->paused) {
        c->paused = 1;
        call_method_quiet(c->transport, s_pause_reading, NULL);
    }
}

/* Parse what ``p[0..n)`` holds; returns the bytes taken (the rest waits in ``in``), -1 on error. */
static Py_ssize_t client_parse(Client *c, const char *p, size_t n) {
    size_t off = 0;
    while (off < n) {
        Req *r = NULL;
        Py_ssize_t got = parse_request(p + off, n - off, c->eng->max_body, &r);
        if (got == -2) return -1;
        if (got == P_NEED) break;
        if (got == P_HANDOFF) {
            c->pending_handoff = 1;
            break;
        }
        off += (size_t)got;
        client_enqueue(c, r);
    }
    return (Py_ssize_t)off;
}

static PyObject *client_data_received(Client *c, PyObject *data) {
    if (c->handoff != NULL) return PyObject_CallMethodOneArg(c->handoff, s_data_received, data);
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    const char *p = view.buf;
    size_t n = (size_t)view.len;
    Py_ssize_t used;
    if (c->inlen == 0) { /* the usual case: parsed from the received bytes, only a remainder copied */
        used = client_parse(c, p, n);
        if (used >= 0 && (size_t)used < n && buf_append(&c->in, &c->inlen, &c->incap, p + used, n - (size_t)used) < 0)
            used = -1;
    } else {
        /* A head ends with a line: bytes that end none change nothing the parser has not seen, so a head
         * sent a few bytes at a time is not scanned again from its start at each read. */
        int skip = c->head_pending && memchr(p, '\n', n) == NULL && c->inlen + n < HEAD_LIMIT;
        if (buf_append(&c->in, &c->inlen, &c->incap, p, n) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if (skip) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
        used = client_parse(c, c->in, c->inlen);
        if (used > 0) {
            memmove(c->in, c->in + used, c->inlen - (size_t)used);
            c->inlen -= (size_t)used;
        }
    }
    PyBuffer_Release(&view);
    if (used < 0) return NULL;
    c->head_pending = c->inlen > 0 && !c->pending_handoff &&
                      memmem(c->in, c->inlen < HEAD_LIMIT ? c->inlen : HEAD_LIMIT, "\r\n\r\n", 4) == NULL;
    if (c->inlen == 0 && c->incap > (64 << 10)) { /* a big body's buffer is not kept for the connection's life */
        PyMem_Free(c->in);
        c->in = NULL;
        c->incap = 0;
    }
    Py_INCREF(c);
    if (c->qhead && !c->busy) client_next(c); /* what came before in the pipeline is started first */
    if (c->pending_handoff && c->transport != NULL) client_do_handoff(c);
    Py_DECREF(c);
    Py_RETURN_NONE;
}

/* Delegation: the Request _ClientConn would build, to GatewayServer.begin. */
static void client_write_answer(Client *c, PyObject *data, int keep);

static void client_delegate(Client *c, Req *r) {
    PyObject *headers = req_headers_dict(r);
    PyObject *req = NULL, *target = NULL, *body = NULL;
    if (headers == NULL) goto fail;
    target = PyUnicode_DecodeLatin1(r->buf + r->target_off, r->target_len, NULL);
    if (target == NULL) goto fail;
    body = PyBytes_FromStringAndSize(r->buf + r->body_off, (Py_ssize_t)r->body_len);
    if (body == NULL) goto fail;
    req = PyObject_CallFunctionObjArgs(c->eng->request_type, method_str[r->method], target, headers, body,
                                       r->minor ? s_v11 : s_v10, r->keep_alive ? Py_True : Py_False, NULL);
    if (req == NULL) goto fail;
    PyObject *res = PyObject_CallFunctionObjArgs(c->eng->begin, req, (PyObject *)c, NULL);
    if (res == NULL) {
        PyErr_WriteUnraisable((PyObject *)c); /* begin answers its own failures; whatever it did stands */
        goto done;
    }
    Py_DECREF(res);
    goto done;
fail: /* the Request could not be built: begin never saw it, so it is answered here, not left busy */
    PyErr_WriteUnraisable((PyObject *)c);
    {
        PyObject *err = r->keep_alive ? c->eng->internal_ka : c->eng->internal_close;
        Py_INCREF(err);
        client_write_answer(c, err, r->keep_alive);
        Py_DECREF(err);
    }
done:
    Py_XDECREF(headers);
    Py_XDECREF(target);
    Py_XDECREF(body);
    Py_XDECREF(req);
}

/* Write the answer to the request being served, then go on with the next (as _ClientConn.respond). */
static void client_write_answer(Client *c, PyObject *data, int keep) {
    c->busy = 0;
    if (c->transport == NULL) return;
    PyObject *t = c->transport;
    Py_INCREF(t);
    if (call_method_quiet(t, s_write, data) < 0) keep = 0;
    if (!keep) {
        call_method_quiet(t, s_close, NULL);
        Py_DECREF(t);
        Py_CLEAR(c->transport);
        return;
    }
    Py_DECREF(t);
    if (c->paused && c->qlen < MAX_PIPELINE / 2 && c->handoff == NULL && c->transport != NULL) {
        c->paused = 0;
        call_method_quiet(c->transport, s_resume_reading, NULL);
    }
    if ((c->qhead || (c->handoff && !c->released)) && !c->serving) client_next(c);
}

/* ---- the fast path ---- */

static int name_eq(const char *a, size_t al, const char *b, size_t bl) {
    if (al != bl) return 0;
    for (size_t k = 0; k < al; k++)
        if (lower((unsigned char)a[k]) != lower((unsigned char)b[k])) return 0;
    return 1;
}

/* Request headers not passed upstream as received (proxy._HOP), and x-forwarded-* (set by the gateway). */
static int req_hop(const char *n, size_t l) {
    if (l >= 12 && ieq(n, 12, "x-forwarded-")) return 1;
    switch (l) {
    case 2: return ieq(n, l, "te");
    case 4: return ieq(n, l, "host");
    case 7: return ieq(n, l, "trailer") || ieq(n, l, "upgrade");
    case 9: return ieq(n, l, "x-real-ip");
    case 10: return ieq(n, l, "connection") || ieq(n, l, "keep-alive");
    case 14: return ieq(n, l, "content-length");
    case 16: return ieq(n, l, "proxy-connection");
    case 17: return ieq(n, l, "transfer-encoding");
    default: return 0;
    }
}

/* Header k's value joined with every later repeat of its name (", "; "; " for cookie), as the dict has it. */
static int sb_joined(SBuf *b, Req *r, int k) {
    Hdr *h = &r->h[k];
    const char *name = r->buf + h->no;
    const char *sep = h->nl == 6 && ieq(name, 6, "cookie") ? "; " : ", ";
    if (sb_add(b, r->buf + h->vo, h->vl) < 0) return -1;
    for (int j = k + 1; j < r->nh; j++)
        if (name_eq(name, h->nl, r->buf + r->h[j].no, r->h[j].nl) &&
            (sb_add(b, sep, 2) < 0 || sb_add(b, r->buf + r->h[j].vo, r->h[j].vl) < 0))
            return -1;
    return 0;
}

static int first_of_name(Req *r, int k) {
    for (int j = 0; j < k; j++)
        if (name_eq(r->buf + r->h[j].no, r->h[j].nl, r->buf + r->h[k].no, r->h[k].nl)) return 0;
    return 1;
}

/* proxy.upstream_path (Kong's path_handling v0/v1) */
static int sb_upstream_path(SBuf *b, RouteF *rf, const char *path, size_t pl, size_t ml) {
    const char *rest = path;
    size_t rl = pl;
    if (rf->strip && ml) {
        rest = path + ml;
        rl = pl - ml;
    }
    const char *sp = rf->svc_path;
    size_t spl = sp ? rf->spl : 0;
    if (rf->v1) {
        if (spl == 0) return rl ? sb_add(b, rest, rl) : SB_LIT(b, "/");
        if (sp[spl - 1] == '/' && rl && rest[0] == '/') return sb_add(b, sp, spl) || sb_add(b, rest + 1, rl - 1);
        return sb_add(b, sp, spl) || sb_add(b, rest, rl);
    }
    if (rl == 0) return spl ? sb_add(b, sp, spl) : SB_LIT(b, "/");
    int slash = rest[0] == '/';
    if (spl == 0 || (spl == 1 && sp[0] == '/')) return (slash ? 0 : SB_LIT(b, "/")) || sb_add(b, rest, rl);
    size_t k = spl;
    while (k && sp[k - 1] == '/') k--;
    return sb_add(b, sp, k) || (slash ? 0 : SB_LIT(b, "/")) || sb_add(b, rest, rl);
}

static int consumer_header(const char *n, size_t l) { /* auth._CONSUMER_HEADERS */
    return (l == 13 && ieq(n, l, "x-consumer-id")) || (l == 20 && ieq(n, l, "x-consumer-custom-id")) ||
           (l == 19 && ieq(n, l, "x-consumer-username")) || (l == 23 && ieq(n, l, "x-credential-identifier")) ||
           (l == 20 && ieq(n, l, "x-anonymous-consumer"));
}

/* GatewayServer._serialize, into ``b`` (the body is added by the caller). */
static int build_upstream(SBuf *b, Client *c, Req *r, RouteF *rf, const char *matched, size_t ml) {
    const char *path = r->buf + r->target_off;
    size_t pl = r->path_len;
    size_t ql = r->target_len > pl + 1 ? r->target_len - pl - 1 : 0;
    int hc, hi = req_find(r, "host", &hc);
    const char *host = hi >= 0 ? r->buf + r->h[hi].vo : "";
    size_t hl = hi >= 0 ? r->h[hi].vl : 0;
    if (sb_add(b, METHOD_NAMES[r->method], strlen(METHOD_NAMES[r->method])) || SB_LIT(b, " ") ||
        sb_upstream_path(b, rf, path, pl, ml))
        return -1;
    if (ql && (SB_LIT(b, "?") || sb_add(b, path + pl + 1, ql))) return -1;
    if (SB_LIT(b, " HTTP/1.1\r\nhost: ")) return -1;
    if (rf->preserve && hl ? sb_add(b, host, hl) : sb_add(b, rf->host_header, rf->hhl)) return -1;
    if (SB_LIT(b, "\r\n")) return -1;
    int xff = -1;
    for (int k = 0; k < r->nh; k++) {
        Hdr *h = &r->h[k];
        const char *n = r->buf + h->no;
        if (!first_of_name(r, k)) continue;
        if (h->nl == 15 && ieq(n, 15, "x-forwarded-for")) xff = k;
        if (req_hop(n, h->nl)) continue;
        if (c->ex.consumer_hdrs != NULL && consumer_header(n, h->nl)) continue; /* _set_consumer popped them */
        if (c->ex.hide != NULL && name_eq(n, h->nl, c->ex.hide, c->ex.hidel)) continue; /* hide_credentials */
        size_t at = b->len; /* the name lower-cased in place: any length (up to MAX_HEADER_BYTES) */
        if (sb_add(b, n, h->nl)) return -1;
        for (size_t j = at; j < b->len; j++) b->p[j] = (char)lower((unsigned char)b->p[j]);
        if (SB_LIT(b, ": ") || sb_joined(b, r, k) || SB_LIT(b, "\r\n")) return -1;
    }
    if (sb_bytesobj(b, c->ex.consumer_hdrs)) return -1; /* appended to the header dict: after the others */
    if (SB_LIT(b, "x-forwarded-for: ")) return -1;
    if (xff >= 0) {
        size_t before = b->len;
        if (sb_joined(b, r, xff)) return -1;
        if (b->len > before && SB_LIT(b, ", ")) return -1;
    }
    size_t host_only = hl;
    if (hl && host[hl - 1] != ']') {
        for (size_t k = hl; k > 0; k--)
            if (host[k - 1] == ':') {
                host_only = k - 1;
                break;
            }
    }
    if (sb_add(b, c->ip, c->ipl) || SB_LIT(b, "\r\nx-forwarded-proto: http\r\nx-forwarded-host: ") ||
        sb_add(b, host, host_only) || SB_LIT(b, "\r\nx-forwarded-port: ") || sb_num(b, c->eng->port) ||
        SB_LIT(b, "\r\nx-forwarded-path: ") || sb_add(b, path, pl) || SB_LIT(b, "\r\nx-real-ip: ") ||
        sb_add(b, c->ip, c->ipl) || SB_LIT(b, "\r\n"))
        return -1;
    if (rf->strip && ml && !(ml == 1 && matched[0] == '/') &&
        (SB_LIT(b, "x-forwarded-prefix: ") || sb_add(b, matched, ml) || SB_LIT(b, "\r\n")))
        return -1;
    if ((r->body_len || r->method == M_POST || r->method == M_PUT || r->method == M_PATCH) &&
        (SB_LIT(b, "content-length: ") || sb_num(b, (long long)r->body_len) || SB_LIT(b, "\r\n")))
        return -1;
    return SB_LIT(b, "\r\n");
}

static int sb_status_line(SBuf *b, Engine *e, int status) {
    PyObject *line = status >= 0 && status < NSTATUS ? e->status_line[status] : NULL;
    if (line != NULL) return sb_add(b, PyBytes_AS_STRING(line), (size_t)PyBytes_GET_SIZE(line));
    return SB_LIT(b, "HTTP/1.1 ") || sb_num(b, status) || SB_LIT(b, " Unknown\r\n");
}

static int sb_framing(SBuf *b, int status, size_t body_len, int keep) {
    if (status >= 200 && status != 204 && status != 304 &&
        (SB_LIT(b, "Content-Length: ") || sb_num(b, (long long)body_len) || SB_LIT(b, "\r\n")))
        return -1;
    return keep ? SB_LIT(b, "Connection: keep-alive\r\n\r\n") : SB_LIT(b, "Connection: close\r\n\r\n");
}

/* The gateway's own answer (kong_error, complete, encode_response): the reply's headers (``extra``
 * after its Content-Type), the plugins' response headers, Server and X-Kong-Response-Latency. */
static void fast_answer_reply(Client *c, int status, const char *extra, size_t el, PyObject *body) {
    Exch *x = &c->ex;
    Engine *e = c->eng;
    int keep = x->keep_alive, head = x->method == M_HEAD;
    long long total_ms = (long long)((now_s() - x->start) * 1000.0);
    SBuf b;
    sb_init(&b);
    PyObject *data = NULL;
    size_t bl = (size_t)PyBytes_GET_SIZE(body);
    if (!(sb_status_line(&b, e, status) || SB_LIT(&b, "Content-Type: application/json; charset=utf-8\r\n") ||
          sb_add(&b, extra, el) || sb_bytesobj(&b, x->rlh) ||
          SB_LIT(&b, "Server: pitwall\r\nX-Kong-Response-Latency: ") || sb_num(&b, total_ms) || SB_LIT(&b, "\r\n") ||
          sb_framing(&b, status, bl, keep)))
        data = sb_bytes(&b, PyBytes_AS_STRING(body), head ? 0 : bl);
    sb_free(&b);
    ex_end(c);
    if (data == NULL) {
        PyErr_WriteUnraisable((PyObject *)c);
        data = keep ? e->internal_ka : e->internal_close;
        Py_INCREF(data);
    }
    client_write_answer(c, data, keep);
    Py_DECREF(data);
}

static void fast_answer(Client *c, Upstream *u) {
    Exch *x = &c->ex;
    Engine *e = c->eng;
    int keep = x->keep_alive, head = x->method == M_HEAD;
    double t = now_s();
    long long up_ms = (long long)((t - x->t0) * 1000.0);
    long long total_ms = (long long)((t - x->start) * 1000.0);
    SBuf b;
    sb_init(&b);
    PyObject *data = NULL;
    if (!(sb_status_line(&b, e, u->status) || sb_add(&b, u->hdr, u->hlen) || sb_bytesobj(&b, x->rlh) ||
          SB_LIT(&b, "Via: 1.1 pitwall\r\nX-Kong-Upstream-Latency: ") || sb_num(&b, up_ms) ||
          SB_LIT(&b, "\r\nX-Kong-Proxy-Latency: ") || sb_num(&b, total_ms > up_ms ? total_ms - up_ms : 0) ||
          SB_LIT(&b, "\r\n") || sb_framing(&b, u->status, u->blen, keep)))
        data = sb_bytes(&b, u->body, head ? 0 : u->blen);
    sb_free(&b);
    ex_end(c);
    if (data == NULL) {
        PyErr_WriteUnraisable((PyObject *)c);
        data = keep ? e->internal_ka : e->internal_close;
        Py_INCREF(data);
    }
    client_write_answer(c, data, keep);
    Py_DECREF(data);
}

static void fast_attempt(Client *c);

/* Send the request on ``u`` (a reference this takes). */
static void up_start(Client *c, Upstream *u) {
    Exch *x = &c->ex;
    RouteF *rf = &x->plan->routes[x->route];
    x->state = X_UPSTREAM;
    Py_XSETREF(x->up, u);
    up_reset(u);
    u->head_only = x->method == M_HEAD;
    Py_INCREF(c);
    Py_XSETREF(u->client, c);
    if (u->transport == NULL) {
        up_fail(u, K_BAD);
        return;
    }
    PyObject *r = PyObject_CallMethodOneArg(u->transport, s_write, x->data);
    if (r == NULL) {
        PyErr_Clear();
        up_fail(u, K_BAD);
        return;
    }
    Py_DECREF(r);
    dl_add(u, rf->read_to);
    /* write_timeout: armed only when the request did not fit the socket at once */
    r = PyObject_CallMethodNoArgs(u->transport, s_get_write_buffer_size);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)u);
        return;
    }
    long pending = PyLong_AsLong(r);
    Py_DECREF(r);
    if (pending > 0) {
        PyObject *cb = PyObject_GetAttr((PyObject *)u, s_stalled);
        PyObject *d = PyFloat_FromDouble(rf->write_to);
        if (cb && d) u->stalled = PyObject_CallMethodObjArgs(c->eng->loop, s_call_later, d, cb, NULL);
        if (u->stalled == NULL) PyErr_WriteUnraisable((PyObject *)u);
        Py_XDECREF(cb);
        Py_XDECREF(d);
    }
}

/* One attempt: an idle pooled connection at once, else a new one through the Python helper. */
static void fast_attempt(Client *c) {
    Exch *x = &c->ex;
    RouteF *rf = &x->plan->routes[x->route];
    x->t0 = now_s();
    Upstream *u = pool_take(rf->pool);
    if (u != NULL) {
        up_start(c, u);
        return;
    }
    x->state = X_CONNECTING;
    PyObject *serial = PyLong_FromUnsignedLong(x->serial);
    PyObject *r = serial ? PyObject_CallFunctionObjArgs(c->eng->connect, (PyObject *)c, serial, (PyObject *)rf->pool,
                                                        rf->host, rf->port, rf->connect_to, NULL)
                         : NULL;
    Py_XDECREF(serial);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)c);
        x->state = X_NONE;
        PyObject *data = x->keep_alive ? c->eng->internal_ka : c->eng->internal_close;
        Py_INCREF(data);
        int keep = x->keep_alive;
        ex_end(c);
        client_write_answer(c, data, keep);
        Py_DECREF(data);
        return;
    }
    Py_DECREF(r);
}

static int idempotent(int m) {
    return m == M_GET || m == M_HEAD || m == M_OPTIONS || m == M_PUT || m == M_DELETE;
}

/* The outcome of an attempt (_Exchange.upstream_done / _proxy_wait): answer, retry, or Kong's error. */
static void fast_upstream_done(Client *c, Upstream *u, int kind) {
    Exch *x = &c->ex;
    if (u != NULL && x->up == u) Py_CLEAR(x->up);
    x->state = X_NONE;
    if (x->plan == NULL) return; /* nothing in flight (abandoned) */
    RouteF *rf = &x->plan->routes[x->route];
    switch (kind) {
    case K_OK:
        fast_answer(c, u);
        return;
    case K_DNS:
        fast_answer_reply(c, 503, "", 0, c->eng->err503);
        return;
    case K_INTERNAL: {
        PyObject *data = x->keep_alive ? c->eng->internal_ka : c->eng->internal_close;
        int keep = x->keep_alive;
        Py_INCREF(data);
        ex_end(c);
        client_write_answer(c, data, keep);
        Py_DECREF(data);
        return;
    }
    default:
        break;
    }
    /* Kong retries a failed connection always, a timeout or a bad response only for an idempotent method. */
    if ((kind == K_CONNECT || idempotent(x->method)) && x->attempt < rf->retries) {
        x->attempt++;
        fast_attempt(c);
        return;
    }
    fast_answer_reply(c, kind == K_TIMEOUT ? 504 : 502, "", 0, kind == K_TIMEOUT ? c->eng->err504 : c->eng->err502);
}

/* _connected(serial, conn | None, kind): the Python connect helper's outcome. */
static PyObject *client_connected(Client *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_connected(serial, conn, kind)");
        return NULL;
    }
    unsigned long serial = PyLong_AsUnsignedLong(args[0]);
    long kind = PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    PyObject *conn = args[1];
    if (conn != Py_None && !PyObject_TypeCheck(conn, &UpstreamType)) {
        PyErr_SetString(PyExc_TypeError, "conn must be an Upstream");
        return NULL;
    }
    Exch *x = &c->ex;
    if (x->state != X_CONNECTING || serial != x->serial) { /* the request went away: the connection is pooled */
        if (conn != Py_None) pool_release((Upstream *)conn, 1);
        Py_RETURN_NONE;
    }
    Py_INCREF(c);
    if (conn != Py_None) {
        Py_INCREF(conn);
        up_start(c, (Upstream *)conn);
    } else {
        fast_upstream_done(c, NULL, kind >= K_CONNECT && kind <= K_INTERNAL ? (int)kind : K_INTERNAL);
    }
    Py_DECREF(c);
    Py_RETURN_NONE;
}

#define PL_PASS 0
#define PL_ANSWERED 1
#define PL_DELEGATE (-1)

/* "name: str(value)\r\n" (latin-1, as _serialize encodes); -1 when the value is not latin-1. */
static int sb_header_obj(SBuf *b, const char *name, PyObject *v) {
    PyObject *str = PyObject_Str(v);
    if (str == NULL) return -1;
    PyObject *enc = PyUnicode_AsLatin1String(str);
    Py_DECREF(str);
    if (enc == NULL) return -1;
    int rc = sb_add(b, name, strlen(name)) || SB_LIT(b, ": ") || sb_bytesobj(b, enc) || SB_LIT(b, "\r\n");
    Py_DECREF(enc);
    return rc ? -1 : 0;
}

static void fast_answer_401(Client *c, struct KeyAuth *ka, PyObject *body) {
    SBuf b;
    sb_init(&b);
    if (SB_LIT(&b, "WWW-Authenticate: ") || sb_add(&b, ka->challenge, ka->chl) || SB_LIT(&b, "\r\n")) {
        PyErr_Clear();
        b.len = 0;
    }
    fast_answer_reply(c, 401, b.p, b.len, body);
    sb_free(&b);
}

/* KeyAuth.access (no anonymous; a key in the query or body is left to Python): PL_PASS with the
 * consumer set, PL_ANSWERED (401 written), or PL_DELEGATE before anything happened. */
static int keyauth_access(Client *c, Req *r, struct KeyAuth *ka) {
    Exch *x = &c->ex;
    if (r->method == M_OPTIONS && !ka->preflight) return PL_PASS;
    const char *key = NULL;
    size_t kl = 0;
    int found = 0;
    size_t ql = r->target_len > r->path_len + 1 ? r->target_len - r->path_len - 1 : 0;
    for (int i = 0; i < ka->n && !found; i++) {
        if (ka->in_header) {
            int count = 0, k = -1;
            for (int j = 0; j < r->nh; j++)
                if (name_eq(r->buf + r->h[j].no, r->h[j].nl, ka->names[i], ka->lens[i])) {
                    if (k < 0) k = j;
                    count = k == j ? 1 : count + 1;
                }
            if (k >= 0) {
                key = r->buf + r->h[k].vo;
                kl = r->h[k].vl;
                /* sent more than once (joined with ", "), or a value holding ", " */
                if (count > 1 || (kl >= 2 && memmem(key, kl, ", ", 2) != NULL)) {
                    fast_answer_401(c, ka, ka->duplicate);
                    return PL_ANSWERED;
                }
                x->hide = ka->hide ? ka->names[i] : NULL;
                x->hidel = ka->lens[i];
                found = 1;
                break;
            }
        }
        if ((ka->in_query && ql) || (ka->in_body && r->body_len)) return PL_DELEGATE;
    }
    if (!found || kl == 0) {
        x->hide = NULL;
        fast_answer_401(c, ka, ka->no_key);
        return PL_ANSWERED;
    }
    PyObject *k = PyUnicode_DecodeLatin1(key, (Py_ssize_t)kl, NULL);
    if (k == NULL) return PL_DELEGATE;
    PyObject *got = PyDict_GetItemWithError(ka->keys, k);
    Py_DECREF(k);
    if (got == NULL) {
        if (PyErr_Occurred()) return PL_DELEGATE;
        x->hide = NULL;
        fast_answer_401(c, ka, ka->unauthorized);
        return PL_ANSWERED;
    }
    PyObject *consumer, *cred;
    if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2 || !PyDict_Check(consumer = PyTuple_GET_ITEM(got, 0)) ||
        !PyDict_Check(cred = PyTuple_GET_ITEM(got, 1)))
        return PL_DELEGATE;
    /* _set_consumer's headers, in its order */
    PyObject *cid = PyDict_GetItemString(consumer, "id"), *custom = PyDict_GetItemString(consumer, "custom_id"),
             *user = PyDict_GetItemString(consumer, "username"), *credid = PyDict_GetItemString(cred, "id");
    if (cid == NULL || credid == NULL || credid == Py_None) return PL_DELEGATE;
    SBuf b;
    sb_init(&b);
    int bad = sb_header_obj(&b, "x-consumer-id", cid) || (custom && custom != Py_None &&
              sb_header_obj(&b, "x-consumer-custom-id", custom)) ||
              (user && user != Py_None && sb_header_obj(&b, "x-consumer-username", user)) ||
              sb_header_obj(&b, "x-credential-identifier", credid);
    PyObject *hdrs = bad ? NULL : sb_bytes(&b, NULL, 0);
    sb_free(&b);
    if (hdrs == NULL) {
        PyErr_Clear(); /* e.g. not latin-1: the Python path decides what that is */
        return PL_DELEGATE;
    }
    Py_XSETREF(x->consumer_hdrs, hdrs);
    KEEP(x->consumer_id, cid);
    KEEP(x->cred_id, credid);
    return PL_PASS;
}

static long long realtime_now(double *now) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    return (long long)*now;
}

/* ratelimit.window_start: whole seconds, minutes, hours, UTC days, months, years. */
static long long window_start(int kind, long long n) {
    static const long long fixed[] = {1, 60, 3600, 86400};
    if (kind < 4) return n - n % fixed[kind];
    time_t t = (time_t)n;
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    if (kind == 5) tm.tm_mon = 0;
    return (long long)timegm(&tm);
}

/* The non-empty str ``o``, or NULL. */
static PyObject *nonempty(PyObject *o) {
    return o != NULL && PyUnicode_Check(o) && PyUnicode_GET_LENGTH(o) > 0 ? o : NULL;
}

/* RateLimiting.access: check every period and count the request in one step, on the same counters
 * as the Python path (ratelimit.COUNTERS.counts); PL_ANSWERED when over a limit. */
static int ratelimit_access(Client *c, struct RateLimit *rl) {
    Exch *x = &c->ex;
    double now;
    long long n = realtime_now(&now);
    PyObject *ident = NULL;
    if (rl->by == BY_CONSUMER) ident = nonempty(x->consumer_id) ? x->consumer_id : nonempty(x->cred_id);
    else if (rl->by == BY_CREDENTIAL) ident = nonempty(x->cred_id);
    else if (rl->by == BY_SERVICE) ident = nonempty(rl->service_id);
    if (ident == NULL) ident = c->client_ip;
    PyObject *counts = PyObject_GetAttrString(rl->counters, "counts");
    if (counts == NULL) return PL_DELEGATE;
    if (!PyDict_Check(counts)) {
        Py_DECREF(counts);
        return PL_DELEGATE;
    }
    if (PyDict_GET_SIZE(counts) >= rl->max_keys) { /* Counters.make_room: may swap the dict */
        Py_DECREF(counts);
        PyObject *r = PyObject_CallMethod(rl->counters, "make_room", NULL);
        if (r == NULL) return PL_DELEGATE;
        Py_DECREF(r);
        counts = PyObject_GetAttrString(rl->counters, "counts");
        if (counts == NULL || !PyDict_Check(counts)) {
            Py_XDECREF(counts);
            return PL_DELEGATE;
        }
    }
    PyObject *keys[MAX_PERIODS] = {NULL};
    long long starts[MAX_PERIODS], used[MAX_PERIODS], remaining[MAX_PERIODS];
    int stop = -1, rc = PL_DELEGATE;
    SBuf b;
    sb_init(&b);
    for (int i = 0; i < rl->nrows; i++) {
        RLRow *w = &rl->rows[i];
        starts[i] = window_start(w->kind, n);
        keys[i] = PyTuple_Pack(3, rl->scope, ident, w->period);
        if (keys[i] == NULL) goto done;
        PyObject *got = PyDict_GetItemWithError(counts, keys[i]);
        if (got == NULL && PyErr_Occurred()) goto done;
        used[i] = 0;
        if (got != NULL) {
            if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2) goto done;
            long long gs = PyLong_AsLongLong(PyTuple_GET_ITEM(got, 0));
            long long gc = PyLong_AsLongLong(PyTuple_GET_ITEM(got, 1));
            if (PyErr_Occurred()) goto done;
            if (gs == starts[i]) used[i] = gc;
        }
        remaining[i] = w->limit - used[i];
        if (remaining[i] <= 0) stop = i;
    }
    long long reset_best = 0;
    if (!rl->hide) { /* RateLimiting._headers */
        long long brem = 0, bwin = 0;
        int best = -1;
        for (int i = 0; i < rl->nrows; i++) {
            RLRow *w = &rl->rows[i];
            long long rem = (stop < 0 || stop == i) ? remaining[i] - 1 : remaining[i];
            if (rem < 0) rem = 0;
            long long reset = w->window - (long long)(now - (double)starts[i]);
            if (reset < 1) reset = 1;
            if (best < 0 || rem < brem || (rem == brem && w->window > bwin)) {
                best = i;
                brem = rem;
                bwin = w->window;
                reset_best = reset;
            }
            if (sb_add(&b, w->limit_hdr, w->lhl) || SB_LIT(&b, ": ") || sb_add(&b, w->limit_text, w->ltl) ||
                SB_LIT(&b, "\r\n") || sb_add(&b, w->rem_hdr, w->rhl) || SB_LIT(&b, ": ") || sb_num(&b, rem) ||
                SB_LIT(&b, "\r\n"))
                goto done;
        }
        RLRow *w = &rl->rows[best];
        if (SB_LIT(&b, "RateLimit-Limit: ") || sb_add(&b, w->limit_text, w->ltl) ||
            SB_LIT(&b, "\r\nRateLimit-Remaining: ") || sb_num(&b, brem) || SB_LIT(&b, "\r\nRateLimit-Reset: ") ||
            sb_num(&b, reset_best) || SB_LIT(&b, "\r\n"))
            goto done;
    }
    if (stop >= 0) {
        if (!rl->hide && (SB_LIT(&b, "Retry-After: ") || sb_num(&b, reset_best) || SB_LIT(&b, "\r\n"))) goto done;
        fast_answer_reply(c, rl->error_code, b.p, b.len, rl->error_body);
        rc = PL_ANSWERED;
        goto done;
    }
    /* the same step as the check: no other request runs between (the GIL is held, no Python code runs) */
    for (int i = 0; i < rl->nrows; i++) {
        PyObject *st = PyLong_FromLongLong(starts[i]), *cnt = PyLong_FromLongLong(used[i] + 1);
        PyObject *val = st && cnt ? PyTuple_Pack(2, st, cnt) : NULL;
        Py_XDECREF(st);
        Py_XDECREF(cnt);
        int err = val == NULL || PyDict_SetItem(counts, keys[i], val) < 0;
        Py_XDECREF(val);
        if (err) {
            PyErr_WriteUnraisable((PyObject *)c); /* only out of memory: counted in part, served anyway */
            break;
        }
    }
    if (!rl->hide) {
        PyObject *h = sb_bytes(&b, NULL, 0);
        if (h == NULL) PyErr_WriteUnraisable((PyObject *)c);
        Py_XSETREF(x->rlh, h);
    }
    rc = PL_PASS;
done:
    if (rc == PL_DELEGATE) PyErr_Clear();
    sb_free(&b);
    for (int i = 0; i < rl->nrows; i++) Py_XDECREF(keys[i]);
    Py_DECREF(counts);
    return rc;
}

/* Serve ``r`` in C when its route is fast; 0 when started, -1 when it must be delegated. */
static int fast_begin(Client *c, Req *r, double start) {
    Plan *plan = c->eng->plan;
    if (plan == NULL || c->ipl == (size_t)-1) return -1;
    const char *matched = "";
    size_t ml = 0;
    int ri = plan_find(plan, r, &matched, &ml);
    if (ri < 0 || !plan->routes[ri].fast) return -1;
    RouteF *rf = &plan->routes[ri];
    Exch *x = &c->ex;
    ex_end(c);
    x->serial++;
    Py_INCREF(plan);
    x->plan = plan;
    x->route = ri;
    x->attempt = 0;
    x->method = r->method;
    x->keep_alive = r->keep_alive;
    x->start = start;
    /* the access phase, in the chain's priority order: key-auth (1250), then rate-limiting (910) */
    if (rf->ka != NULL) {
        int rc = keyauth_access(c, r, rf->ka);
        if (rc == PL_DELEGATE) {
            ex_end(c);
            return -1;
        }
        if (rc == PL_ANSWERED) {
            c->eng->requests++;
            return 0;
        }
    }
    if (rf->rl != NULL) {
        int rc = ratelimit_access(c, rf->rl);
        if (rc == PL_DELEGATE) {
            ex_end(c);
            return -1;
        }
        c->eng->requests++;
        if (rc == PL_ANSWERED) return 0;
    } else {
        c->eng->requests++;
    }
    SBuf b;
    sb_init(&b);
    PyObject *data = NULL;
    if (build_upstream(&b, c, r, rf, matched, ml) == 0) data = sb_bytes(&b, r->buf + r->body_off, r->body_len);
    sb_free(&b);
    if (data == NULL) {
        PyErr_WriteUnraisable((PyObject *)c);
        PyObject *err = x->keep_alive ? c->eng->internal_ka : c->eng->internal_close;
        int keep = x->keep_alive;
        Py_INCREF(err);
        ex_end(c);
        client_write_answer(c, err, keep);
        Py_DECREF(err);
        return 0;
    }
    x->data = data;
    fast_attempt(c);
    return 0;
}

static void client_next(Client *c) {
    Py_INCREF(c); /* an answer may close the connection and drop the last reference elsewhere */
    c->serving = 1;
    while (c->qhead && !c->busy && c->transport != NULL) {
        Req *r = c->qhead;
        c->qhead = r->next;
        if (c->qhead == NULL) c->qtail = NULL;
        c->qlen--;
        c->busy = 1;
        if (fast_begin(c, r, now_s()) < 0) client_delegate(c, r);
        req_free(r);
    }
    c->serving = 0;
    if (c->handoff != NULL && !c->released && c->qhead == NULL && !c->busy && c->transport != NULL) {
        c->released = 1; /* every request parsed here is answered: the Python connection goes on */
        PyObject *r = PyObject_CallMethodNoArgs(c->handoff, s_release);
        if (r == NULL) PyErr_WriteUnraisable((PyObject *)c);
        else Py_DECREF(r);
    }
    Py_DECREF(c);
}

/* _answered(data, keep_alive): the Python subclass's ``respond`` encoded an answer; write it, go on. */
static PyObject *client_answered(Client *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_answered(data, keep_alive)");
        return NULL;
    }
    int keep = PyObject_IsTrue(args[1]);
    if (keep < 0) return NULL;
    Py_INCREF(c);
    client_write_answer(c, args[0], keep);
    Py_DECREF(c);
    Py_RETURN_NONE;
}

static PyObject *client_connection_made(Client *c, PyObject *transport) {
    SETREF_NEW(c->transport, transport);
    PyObject *peer = PyObject_CallMethodOneArg(transport, s_get_extra_info, s_peername);
    if (peer == NULL) return NULL;
    if (PyTuple_Check(peer) && PyTuple_GET_SIZE(peer) > 0 && PyUnicode_Check(PyTuple_GET_ITEM(peer, 0)))
        SETREF_NEW(c->client_ip, PyTuple_GET_ITEM(peer, 0));
    Py_DECREF(peer);
    Py_ssize_t n;
    const char *ip = PyUnicode_AsUTF8AndSize(c->client_ip, &n);
    if (ip == NULL) return NULL;
    c->ipl = (size_t)-1; /* not plain ASCII (never for an IP address): every request delegated */
    if ((size_t)n < sizeof c->ip && PyUnicode_IS_ASCII(c->client_ip)) {
        memcpy(c->ip, ip, (size_t)n);
        c->ipl = (size_t)n;
    }
    if (c->eng->loop != NULL && c->loop != c->eng->loop) SETREF_NEW(c->loop, c->eng->loop);
    if (PySet_Add(c->eng->conns, (PyObject *)c) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *client_connection_lost(Client *c, PyObject *exc) {
    if (c->handoff != NULL) {
        PyObject *h = c->handoff;
        Py_INCREF(h);
        PyObject *r = PyObject_CallMethodOneArg(h, s_connection_lost, exc);
        Py_DECREF(h);
        if (r == NULL) PyErr_WriteUnraisable((PyObject *)c);
        else Py_DECREF(r);
    }
    if (PySet_Discard(c->eng->conns, (PyObject *)c) < 0) return NULL;
    Py_CLEAR(c->transport);
    Exch *x = &c->ex;
    if (x->state == X_UPSTREAM && x->up != NULL) {
        /* The client is gone: its upstream request is abandoned and that connection closed, not pooled
         * (its answer, still coming, would otherwise be read as the next request's). */
        Upstream *u = x->up;
        Py_INCREF(u);
        up_finish(u);
        Py_CLEAR(u->client);
        up_close(u, 1);
        Py_DECREF(u);
    }
    ex_end(c); /* a connection still being opened for it is pooled when it comes (serial no longer matches) */
    client_free_queue(c);
    PyMem_Free(c->in);
    c->in = NULL;
    c->inlen = c->incap = 0;
    Py_RETURN_NONE;
}

static PyObject *client_eof_received(Client *c, PyObject *unused UNUSED) {
    if (c->handoff != NULL) return PyObject_CallMethodNoArgs(c->handoff, s_eof_received);
    Py_RETURN_NONE; /* as asyncio.Protocol's: the transport closes itself */
}

static PyObject *client_close(Client *c, PyObject *unused UNUSED) {
    if (c->transport != NULL) return PyObject_CallMethodNoArgs(c->transport, s_close);
    Py_RETURN_NONE;
}

static PyObject *client_noop(Client *c UNUSED, PyObject *unused UNUSED) { Py_RETURN_NONE; }

static PyMethodDef client_methods[] = {
    {"connection_made", (PyCFunction)client_connection_made, METH_O, NULL},
    {"connection_lost", (PyCFunction)client_connection_lost, METH_O, NULL},
    {"data_received", (PyCFunction)client_data_received, METH_O, NULL},
    {"eof_received", (PyCFunction)client_eof_received, METH_NOARGS, NULL},
    {"pause_writing", (PyCFunction)client_noop, METH_NOARGS, NULL},
    {"resume_writing", (PyCFunction)client_noop, METH_NOARGS, NULL},
    {"close", (PyCFunction)client_close, METH_NOARGS, "close the connection"},
    {"_answered", (PyCFunction)(void (*)(void))client_answered, METH_FASTCALL,
     "_answered(data, keep_alive): write the answer to the request being served, go on with the next"},
    {"_connected", (PyCFunction)(void (*)(void))client_connected, METH_FASTCALL,
     "_connected(serial, conn | None, kind): a new upstream connection for the request waiting on it"},
    {NULL}};

static PyMemberDef client_members[] = {
    {"loop", T_OBJECT, offsetof(Client, loop), READONLY, NULL},
    {"client_ip", T_OBJECT, offsetof(Client, client_ip), READONLY, NULL},
    {"transport", T_OBJECT, offsetof(Client, transport), READONLY, NULL},
    {"busy", T_INT, offsetof(Client, busy), READONLY, NULL},
    {NULL}};

static PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pitwall.traffic.gateway._gwfast.Client",
    .tp_basicsize = sizeof(Client),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Client(engine): the asyncio Protocol of one plain-HTTP client connection",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)client_init,
    .tp_dealloc = (destructor)client_dealloc,
    .tp_traverse = (traverseproc)client_traverse,
    .tp_clear = (inquiry)client_clear,
    .tp_methods = client_methods,
    .tp_members = client_members,
};

/* ------------------------------------------------------------------------------------------------ */
/* Module */

static struct PyModuleDef gwfast_module = {
    PyModuleDef_HEAD_INIT, "_gwfast", "The gateway's client connections in C (see gwfast.c).", -1, NULL, NULL, NULL,
    NULL, NULL};

#define INTERN(var, text)                                                  \
    do {                                                                   \
        if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL; \
    } while (0)

PyMODINIT_FUNC PyInit__gwfast(void) {
    init_tables();
    for (int m = 0; m < M_COUNT; m++) INTERN(method_str[m], METHOD_NAMES[m]);
    INTERN(s_write, "write");
    INTERN(s_close, "close");
    INTERN(s_abort, "abort");
    INTERN(s_pause_reading, "pause_reading");
    INTERN(s_resume_reading, "resume_reading");
    INTERN(s_get_extra_info, "get_extra_info");
    INTERN(s_peername, "peername");
    INTERN(s_data_received, "data_received");
    INTERN(s_connection_lost, "connection_lost");
    INTERN(s_eof_received, "eof_received");
    INTERN(s_call_later, "call_later");
    INTERN(s_cancel, "cancel");
    INTERN(s_get_write_buffer_size, "get_write_buffer_size");
    INTERN(s_fire, "_fire");
    INTERN(s_stalled, "_stalled");
    INTERN(s_v11, "1.1");
    INTERN(s_v10, "1.0");
    INTERN(s_empty, "");
    INTERN(s_begin, "begin");
    INTERN(s_conns, "conns");
    INTERN(s_release, "_native_release");
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&ClientType) < 0 || PyType_Ready(&UpstreamType) < 0 ||
        PyType_Ready(&PoolType) < 0 || PyType_Ready(&PlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&gwfast_module);
    if (m == NULL) return NULL;
    PyTypeObject *types[] = {&EngineType, &ClientType, &UpstreamType, &PoolType, &PlanType};
    const char *names[] = {"Engine", "Client", "Upstream", "Pool", "Plan"};
    for (int i = 0; i < 5; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(m, "MAX_PIPELINE", MAX_PIPELINE) < 0 || PyModule_AddIntConstant(m, "MAX_URL", MAX_URL) < 0 ||
        PyModule_AddIntConstant(m, "MAX_HEADER_BYTES", MAX_HEADER_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "MAX_IDLE", MAX_IDLE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RESPONSE_BYTES", MAX_RESPONSE_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
