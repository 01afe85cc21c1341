/* The gateway's client connections in C (pitwall.traffic.gateway._gwfast).
 *
 * Design
 * ------
 * ``Client`` is the asyncio Protocol of one plain-HTTP client connection of the gateway's listener
 * (TLS connections keep the Python ``_ClientConn``). It parses HTTP/1.1 requests itself and answers
 * them in order, one at a time, exactly as ``_ClientConn`` does (at most ``MAX_PIPELINE`` queued
 * before reading pauses, reading resumes below half).
 *
 * The parser is deliberately strict and small: it accepts only what it can frame with certainty
 * (``GET HEAD POST PUT PATCH DELETE OPTIONS``, an origin-form target of plain URL characters,
 * ``HTTP/1.1`` or ``HTTP/1.0``, at most ``MAX_HEADERS`` header lines of token names and printable
 * ASCII values, a body framed by one ``Content-Length``). Anything else -- chunked or other
 * transfer codings, ``Upgrade``, ``Expect``, obs-fold, bytes over 0x7f, a head over the limits,
 * a body over ``max_body_bytes``, malformed input -- is *handed off*: once the requests before it
 * are answered, a Python ``_ClientConn`` takes over the connection and is fed every byte from the
 * start of that request on. So every refusal (400, 413, 414, 431, with its linger-then-close) and
 * every unusual request is served by the very code that serves them without this module, and the
 * bytes are the same by construction.
 *
 * A parsed request is *delegated* (stage 1): the same ``Request`` ``_ClientConn`` would build is
 * handed to ``GatewayServer.begin`` with this object as the client (``loop``, ``client_ip``,
 * ``respond`` -- the latter in the Python subclass, which encodes with ``encode_response`` and
 * calls ``_answered``).
 *
 * All methods run on the event loop with the GIL held; every buffer is bounded by the limits
 * above (head <= HEAD_LIMIT bytes, body <= max_body_bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define UNUSED __attribute__((unused))

#define MAX_URL (8 << 10)
#define MAX_HEADER_BYTES (32 << 10)
#define MAX_PIPELINE 16
#define MAX_HEADERS 100
/* A head longer than this is over one of Python's limits (or malformed): the Python parser decides. */
#define HEAD_LIMIT (MAX_URL + MAX_HEADER_BYTES + 4096)
/* While a hand-off waits for the answers before it, at most this much is buffered before reading pauses. */
#define HANDOFF_BUFFER (1 << 20)

/* ------------------------------------------------------------------------------------------------ */
/* Methods */

enum { M_GET, M_HEAD, M_POST, M_PUT, M_PATCH, M_DELETE, M_OPTIONS, M_COUNT };
static const char *const METHOD_NAMES[M_COUNT] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
static PyObject *method_str[M_COUNT];

/* Interned attribute names and constants. */
static PyObject *s_write, *s_close, *s_pause_reading, *s_resume_reading, *s_get_extra_info, *s_peername,
    *s_add, *s_discard, *s_data_received, *s_connection_lost, *s_eof_received, *s_v11, *s_v10, *s_empty,
    *s_begin, *s_conns;

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
/* Engine: what every connection of one GatewayServer shares. */

typedef struct {
    PyObject_HEAD
    PyObject *gw;
    PyObject *begin;     /* gw.begin */
    PyObject *conns;     /* gw.conns (a set) */
    PyObject *loop;
    PyObject *request_type; /* context.Request */
    PyObject *handoff;   /* handoff(client, transport, data, paused) -> the Python protocol now serving */
    Py_ssize_t max_body;
    long long requests;  /* requests this module served itself */
} Engine;

static int engine_traverse(Engine *e, visitproc visit, void *arg) {
    Py_VISIT(e->gw);
    Py_VISIT(e->begin);
    Py_VISIT(e->conns);
    Py_VISIT(e->loop);
    Py_VISIT(e->request_type);
    Py_VISIT(e->handoff);
    return 0;
}

static int engine_clear(Engine *e) {
    Py_CLEAR(e->gw);
    Py_CLEAR(e->begin);
    Py_CLEAR(e->conns);
    Py_CLEAR(e->loop);
    Py_CLEAR(e->request_type);
    Py_CLEAR(e->handoff);
    return 0;
}

static void engine_dealloc(Engine *e) {
    PyObject_GC_UnTrack(e);
    engine_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static int engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"gw", "request_type", "handoff", "max_body_bytes", NULL};
    PyObject *gw, *rt, *ho;
    Py_ssize_t mb;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOn", kwlist, &gw, &rt, &ho, &mb)) return -1;
    PyObject *begin = PyObject_GetAttr(gw, s_begin);
    if (begin == NULL) return -1;
    PyObject *conns = PyObject_GetAttr(gw, s_conns);
    if (conns == NULL) {
        Py_DECREF(begin);
        return -1;
    }
    engine_clear(e);
    Py_INCREF(gw);
    e->gw = gw;
    e->begin = begin;
    e->conns = conns;
    Py_INCREF(rt);
    e->request_type = rt;
    Py_INCREF(ho);
    e->handoff = ho;
    e->max_body = mb;
    return 0;
}

static PyObject *engine_start(Engine *e, PyObject *args) {
    PyObject *loop;
    if (!PyArg_ParseTuple(args, "O", &loop)) return NULL;
    Py_INCREF(loop);
    Py_XSETREF(e->loop, loop);
    Py_RETURN_NONE;
}

static PyMethodDef engine_methods[] = {
    {"start", (PyCFunction)engine_start, METH_VARARGS, "start(loop): the loop its connections run on"},
    {NULL}};

static PyMemberDef engine_members[] = {
    {"requests", T_LONGLONG, offsetof(Engine, requests), READONLY, "requests served in C"},
    {"loop", T_OBJECT, offsetof(Engine, loop), READONLY, NULL},
    {NULL}};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pitwall.traffic.gateway._gwfast.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Engine(gw, request_type, handoff, max_body_bytes): what one gateway's connections share",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_traverse = (traverseproc)engine_traverse,
    .tp_clear = (inquiry)engine_clear,
    .tp_methods = engine_methods,
    .tp_members = engine_members,
};

/* ------------------------------------------------------------------------------------------------ */
/* Client */

typedef struct {
    PyObject_HEAD
    Engine *eng;
    PyObject *transport;
    PyObject *loop;
    PyObject *client_ip;
    PyObject *handoff; /* the Python protocol serving the connection after a hand-off */
    char *in;          /* bytes received and not yet parsed */
    size_t inlen, incap;
    size_t need;       /* a request needs at least this many bytes of ``in`` (0: unknown) */
    Req *qhead, *qtail;
    int qlen;
    int busy, serving, paused, pending_handoff;
} Client;

static int client_traverse(Client *c, visitproc visit, void *arg) {
    Py_VISIT(c->eng);
    Py_VISIT(c->transport);
    Py_VISIT(c->loop);
    Py_VISIT(c->client_ip);
    Py_VISIT(c->handoff);
    return 0;
}

static int client_clear(Client *c) {
    Py_CLEAR(c->eng);
    Py_CLEAR(c->transport);
    Py_CLEAR(c->loop);
    Py_CLEAR(c->client_ip);
    Py_CLEAR(c->handoff);
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
    Py_INCREF(eng);
    Py_XSETREF(c->eng, (Engine *)eng);
    PyObject *loop = ((Engine *)eng)->loop ? ((Engine *)eng)->loop : Py_None;
    Py_INCREF(loop);
    Py_XSETREF(c->loop, loop);
    Py_INCREF(s_empty);
    Py_XSETREF(c->client_ip, s_empty);
    return 0;
}

/* Call ``obj.name(*args)`` and drop the result; errors go to sys.unraisablehook (a callback of the
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
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

static void client_next(Client *c);

/* Hand the connection to a Python ``_ClientConn`` with every byte not yet served. */
static void client_do_handoff(Client *c) {
    c->pending_handoff = 0;
    PyObject *data = PyBytes_FromStringAndSize(c->in ? c->in : "", (Py_ssize_t)c->inlen);
    c->inlen = 0;
    c->need = 0;
    if (data == NULL) {
        PyErr_WriteUnraisable((PyObject *)c);
        return;
    }
    PyObject *h = PyObject_CallFunctionObjArgs(c->eng->handoff, (PyObject *)c, c->transport, data,
                                               c->paused ? Py_True : Py_False, NULL);
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
        if (c->need && n - off < c->need) break;
        Req *r = NULL;
        Py_ssize_t got = parse_request(p + off, n - off, c->eng->max_body, &r);
        if (got == -2) return -1;
        if (got == P_NEED) {
            c->need = 0;
            break;
        }
        if (got == P_HANDOFF) {
            c->pending_handoff = 1;
            break;
        }
        c->need = 0;
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
    if (c->pending_handoff) { /* kept for the Python parser, which takes over once the queue is answered */
        int rc = buf_append(&c->in, &c->inlen, &c->incap, p, n);
        PyBuffer_Release(&view);
        if (rc < 0) return NULL;
        if (c->inlen > HANDOFF_BUFFER && !c->paused && c->transport) {
            c->paused = 1;
            if (call_method_quiet(c->transport, s_pause_reading, NULL) < 0) return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t used;
    if (c->inlen == 0) { /* the usual case: parsed from the received bytes, only a remainder copied */
        used = client_parse(c, p, n);
        if (used >= 0 && (size_t)used < n && buf_append(&c->in, &c->inlen, &c->incap, p + used, n - (size_t)used) < 0)
            used = -1;
    } else {
        if (buf_append(&c->in, &c->inlen, &c->incap, p, n) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        used = client_parse(c, c->in, c->inlen);
        if (used > 0) {
            memmove(c->in, c->in + used, c->inlen - (size_t)used);
            c->inlen -= (size_t)used;
        }
    }
    PyBuffer_Release(&view);
    if (used < 0) return NULL;
    if (c->inlen == 0 && c->incap > (64 << 10)) { /* a big body's buffer is not kept for the connection's life */
        PyMem_Free(c->in);
        c->in = NULL;
        c->incap = 0;
    }
    if ((c->qhead || c->pending_handoff) && !c->busy) client_next(c);
    Py_RETURN_NONE;
}

/* Stage 1: every request goes to GatewayServer.begin as the Request _ClientConn would build. */
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
    if (res == NULL) goto fail;
    Py_DECREF(res);
    goto done;
fail:
    PyErr_WriteUnraisable((PyObject *)c);
done:
    Py_XDECREF(headers);
    Py_XDECREF(target);
    Py_XDECREF(body);
    Py_XDECREF(req);
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
        client_delegate(c, r);
        req_free(r);
    }
    c->serving = 0;
    if (c->pending_handoff && c->qhead == NULL && !c->busy && c->transport != NULL) client_do_handoff(c);
    Py_DECREF(c);
}

/* _answered(data, keep_alive): the Python subclass's ``respond`` encoded an answer; write it, go on. */
static PyObject *client_answered(Client *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_answered(data, keep_alive)");
        return NULL;
    }
    c->busy = 0;
    if (c->transport == NULL) Py_RETURN_NONE;
    int keep = PyObject_IsTrue(args[1]);
    if (keep < 0) return NULL;
    PyObject *t = c->transport;
    Py_INCREF(t);
    PyObject *r = PyObject_CallMethodOneArg(t, s_write, args[0]);
    if (r == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    Py_DECREF(r);
    if (!keep) {
        r = PyObject_CallMethodNoArgs(t, s_close);
        Py_DECREF(t);
        Py_CLEAR(c->transport);
        if (r == NULL) return NULL;
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    Py_DECREF(t);
    if (c->paused && c->qlen < MAX_PIPELINE / 2 && !c->pending_handoff) {
        c->paused = 0;
        if (call_method_quiet(c->transport, s_resume_reading, NULL) < 0) Py_RETURN_NONE;
    }
    if ((c->qhead || c->pending_handoff) && !c->serving) client_next(c);
    Py_RETURN_NONE;
}

static PyObject *client_connection_made(Client *c, PyObject *transport) {
    Py_INCREF(transport);
    Py_XSETREF(c->transport, transport);
    PyObject *peer = PyObject_CallMethodOneArg(transport, s_get_extra_info, s_peername);
    if (peer == NULL) return NULL;
    if (PyTuple_Check(peer) && PyTuple_GET_SIZE(peer) > 0 && PyUnicode_Check(PyTuple_GET_ITEM(peer, 0))) {
        PyObject *ip = PyTuple_GET_ITEM(peer, 0);
        Py_INCREF(ip);
        Py_XSETREF(c->client_ip, ip);
    }
    Py_DECREF(peer);
    if (c->eng->loop != NULL && c->loop != c->eng->loop) {
        Py_INCREF(c->eng->loop);
        Py_XSETREF(c->loop, c->eng->loop);
    }
    if (PySet_Add(c->eng->conns, (PyObject *)c) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *client_connection_lost(Client *c, PyObject *exc) {
    if (c->handoff != NULL) {
        PyObject *h = c->handoff;
        Py_INCREF(h);
        PyObject *r = PyObject_CallMethodOneArg(h, s_connection_lost, exc);
        Py_DECREF(h);
        Py_CLEAR(c->transport);
        return r;
    }
    if (PySet_Discard(c->eng->conns, (PyObject *)c) < 0) return NULL;
    Py_CLEAR(c->transport);
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
    PyModuleDef_HEAD_INIT, "_gwfast", "The gateway's client connections in C (see gwfast.c).", -1, NULL, NULL, NULL, NULL, NULL};

#define INTERN(var, text)                                         \
    do {                                                          \
        if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL; \
    } while (0)

PyMODINIT_FUNC PyInit__gwfast(void) {
    init_tables();
    for (int m = 0; m < M_COUNT; m++) INTERN(method_str[m], METHOD_NAMES[m]);
    INTERN(s_write, "write");
    INTERN(s_close, "close");
    INTERN(s_pause_reading, "pause_reading");
    INTERN(s_resume_reading, "resume_reading");
    INTERN(s_get_extra_info, "get_extra_info");
    INTERN(s_peername, "peername");
    INTERN(s_add, "add");
    INTERN(s_discard, "discard");
    INTERN(s_data_received, "data_received");
    INTERN(s_connection_lost, "connection_lost");
    INTERN(s_eof_received, "eof_received");
    INTERN(s_v11, "1.1");
    INTERN(s_v10, "1.0");
    INTERN(s_empty, "");
    INTERN(s_begin, "begin");
    INTERN(s_conns, "conns");
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&ClientType) < 0) return NULL;
    PyObject *m = PyModule_Create(&gwfast_module);
    if (m == NULL) return NULL;
    Py_INCREF(&EngineType);
    Py_INCREF(&ClientType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddObject(m, "Client", (PyObject *)&ClientType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PIPELINE", MAX_PIPELINE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_URL", MAX_URL) < 0 ||
        PyModule_AddIntConstant(m, "MAX_HEADER_BYTES", MAX_HEADER_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
