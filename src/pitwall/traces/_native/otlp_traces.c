/*
 * Fast decoder for OTLP ExportTraceServiceRequest protobuf bodies.
 *
 * One call walks the protobuf wire format and writes the span columns of
 * pitwall.traces.model.SPAN_SCHEMA (less the tenant and flags columns) as
 * flat buffers: no per-span or per-attribute Python object is created.
 * Attributes, resource, scope, events and links become the same compact
 * JSON that the Python path writes (json.dumps with separators=(",", ":")
 * and ensure_ascii=False), byte for byte.
 *
 * decode(buf, max_spans, max_attrs, max_value_len, max_events) returns None
 * when the request is anything but plainly valid (malformed wire data,
 * invalid UTF-8, a bad id or kind, a limit exceeded, duplicate attribute
 * keys, a sub-message repeated): the caller then decodes with upb, which
 * produces the authoritative error message or result. Otherwise it returns
 *   (n, ints, i8s, strings) where
 *   ints    : bytes of int64[3][n]   tkey, start_ns, duration_ns
 *   i8s     : bytes of int8[2][n]    kind, status_code
 *   strings : tuple of 12 (offsets int32[n+1] bytes, data bytes) for trace_id,
 *             span_id, parent_id, service, name, status_message,
 *             remote_service, attributes, resource, scope, events, links.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NSTR 12
enum { S_TRACE, S_SPAN, S_PARENT, S_SERVICE, S_NAME, S_STATUS_MSG, S_REMOTE, S_ATTRS, S_RESOURCE, S_SCOPE,
       S_EVENTS, S_LINKS };
#define FALLBACK 1
#define NOMEM 2
#define MAX_DEPTH 24
#define MAX_KEYS 256

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} buf_t;

typedef struct {
    const uint8_t *p;
    uint64_t n;
} slice_t;

typedef struct {
    long long max_spans, max_attrs, max_value_len, max_events;
} limits_t;

typedef struct {
    buf_t ints[3];
    buf_t i8s[2];
    buf_t off[NSTR];
    buf_t str[NSTR];
    Py_ssize_t n;
} out_t;

static int grow(buf_t *b, Py_ssize_t n) {
    if (b->len + n <= b->cap) return 0;
    Py_ssize_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->len + n) nc *= 2;
    char *nd = PyMem_RawRealloc(b->data, nc);
    if (!nd) return NOMEM;
    b->data = nd;
    b->cap = nc;
    return 0;
}

static int put(buf_t *b, const void *p, Py_ssize_t n) {
    if (grow(b, n)) return NOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int putc_(buf_t *b, char c) { return put(b, &c, 1); }
static int puts_(buf_t *b, const char *s) { return put(b, s, (Py_ssize_t)strlen(s)); }

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    while (*p < end && shift < 64) {
        uint8_t c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) { *out = v; return 0; }
        shift += 7;
    }
    return FALLBACK;
}

/* Read one field header and, for wire type 2, its payload slice. */
static int field(const uint8_t **p, const uint8_t *end, int *num, int *wt, slice_t *s, uint64_t *v) {
    uint64_t key;
    if (varint(p, end, &key)) return FALLBACK;
    if ((key >> 3) == 0 || (key >> 3) > 536870911) return FALLBACK; /* field numbers 1 .. 2^29-1 */
    *num = (int)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0: return varint(p, end, v);
    case 1:
        if (end - *p < 8) return FALLBACK;
        memcpy(v, *p, 8);
        *p += 8;
        return 0;
    case 2: {
        uint64_t n;
        if (varint(p, end, &n) || (uint64_t)(end - *p) < n) return FALLBACK;
        s->p = *p;
        s->n = n;
        *p += n;
        return 0;
    }
    case 5: {
        uint32_t u;
        if (end - *p < 4) return FALLBACK;
        memcpy(&u, *p, 4);
        *v = u;
        *p += 4;
        return 0;
    }
    default: return FALLBACK;
    }
}

/* Strict UTF-8 (as upb checks proto3 strings); returns the number of code points or -1. */
static long long utf8_len(const uint8_t *s, uint64_t n) {
    long long cps = 0;
    uint64_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; cps++; continue; }
        int k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; }
        else return -1;
        for (int j = 1; j <= k; j++) {
            if (i + j >= n) return -1;
            uint8_t d = s[i + j];
            if ((d & 0xC0) != 0x80) return -1;
            cp = (cp << 6) | (d & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return -1;
        i += k + 1;
        cps++;
    }
    return cps;
}

static const char HEX[] = "0123456789abcdef";

/* A JSON string as Python's json.dumps(ensure_ascii=False) writes it; s is valid UTF-8. */
static int json_str(buf_t *b, const uint8_t *s, uint64_t n) {
    if (grow(b, (Py_ssize_t)n + 2)) return NOMEM;
    b->data[b->len++] = '"';
    uint64_t i = 0;
    while (i < n) {
        uint64_t j = i;
        while (j < n && s[j] >= 0x20 && s[j] != '"' && s[j] != '\\') j++;
        if (put(b, s + i, (Py_ssize_t)(j - i))) return NOMEM;
        if (j == n) break;
        uint8_t c = s[j];
        char esc[7];
        const char *e = esc;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default:
            esc[0] = '\\'; esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = HEX[c >> 4]; esc[5] = HEX[c & 15]; esc[6] = 0;
        }
        if (puts_(b, e)) return NOMEM;
        i = j + 1;
    }
    return putc_(b, '"');
}

static int json_i64(buf_t *b, int64_t v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    return put(b, tmp, k);
}

static int json_double(buf_t *b, double v) {
    if (v != v) return puts_(b, "NaN");
    if (v == 1.0 / 0.0) return puts_(b, "Infinity");
    if (v == -1.0 / 0.0) return puts_(b, "-Infinity");
    char *s = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) return NOMEM;
    int r = puts_(b, s);
    PyMem_Free(s);
    return r;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int json_b64(buf_t *b, const uint8_t *s, uint64_t n) {
    if (puts_(b, "{\"$bytes\":\"")) return NOMEM;
    if (grow(b, (Py_ssize_t)((n + 2) / 3 * 4))) return NOMEM;
    char *o = b->data + b->len;
    uint64_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63]; *o++ = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)s[i + 1] << 8;
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = o - b->data;
    return puts_(b, "\"}");
}

typedef struct {
    const limits_t *lim;
    /* the top-level attributes of the span being decoded, for remote_service_of */
    slice_t keys[MAX_KEYS];
    slice_t strvals[MAX_KEYS];
    int is_str[MAX_KEYS];
    int nkeys;
} ctx_t;

static int any_value(buf_t *b, const uint8_t *p, const uint8_t *end, ctx_t *cx, int depth, slice_t *str_out,
                     int *is_str);
static int kv_object(buf_t *b, const uint8_t *p, const uint8_t *end, int fieldno, ctx_t *cx, int depth,
                     long long *count, int top);

/* AnyValue: the oneof's last member wins, as protobuf parsers merge. */
static int any_value(buf_t *b, const uint8_t *p, const uint8_t *end, ctx_t *cx, int depth, slice_t *str_out,
                     int *is_str) {
    if (depth > MAX_DEPTH) return FALLBACK;
    int which = 0;
    slice_t s = {0};
    uint64_t v = 0;
    while (p < end) {
        int num, wt;
        slice_t fs = {0};
        uint64_t fv = 0;
        if (field(&p, end, &num, &wt, &fs, &fv)) return FALLBACK;
        if (num >= 1 && num <= 7) {
            static const int want[8] = {0, 2, 0, 0, 1, 2, 2, 2};
            if (wt != want[num]) return FALLBACK;
            if (num == 1 && utf8_len(fs.p, fs.n) < 0) return FALLBACK; /* upb checks replaced members too */
            which = num;
            s = fs;
            v = fv;
        }
    }
    if (is_str) *is_str = which == 1;
    switch (which) {
    case 0: return puts_(b, "null");
    case 1: {
        long long cps = utf8_len(s.p, s.n);
        if (cps < 0 || cps > cx->lim->max_value_len) return FALLBACK;
        if (str_out) *str_out = s;
        return json_str(b, s.p, s.n);
    }
    case 2: return puts_(b, v ? "true" : "false");
    case 3: return json_i64(b, (int64_t)v);
    case 4: {
        double d;
        memcpy(&d, &v, 8);
        return json_double(b, d);
    }
    case 5: {
        /* ArrayValue { repeated AnyValue values = 1; } */
        const uint8_t *q = s.p, *qe = s.p + s.n;
        int first = 1, r;
        if (putc_(b, '[')) return NOMEM;
        while (q < qe) {
            int num, wt;
            slice_t es = {0};
            uint64_t ev = 0;
            if (field(&q, qe, &num, &wt, &es, &ev)) return FALLBACK;
            if (num != 1) continue;
            if (wt != 2) return FALLBACK;
            if (!first && putc_(b, ',')) return NOMEM;
            first = 0;
            if ((r = any_value(b, es.p, es.p + es.n, cx, depth + 1, NULL, NULL))) return r;
        }
        return putc_(b, ']');
    }
    case 6: {
        long long count = 0;
        return kv_object(b, s.p, s.p + s.n, 1, cx, depth + 1, &count, 0);
    }
    case 7:
        if ((long long)s.n > cx->lim->max_value_len) return FALLBACK;
        return json_b64(b, s.p, s.n);
    }
    return FALLBACK;
}

/* The KeyValue entries at field number `fieldno` of [p, end) as one JSON object. */
static int kv_object(buf_t *b, const uint8_t *p, const uint8_t *end, int fieldno, ctx_t *cx, int depth,
                     long long *count, int top) {
    slice_t keys[MAX_KEYS];
    int nk = 0, r;
    if (depth > MAX_DEPTH) return FALLBACK;
    if (putc_(b, '{')) return NOMEM;
    while (p < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&p, end, &num, &wt, &s, &v)) return FALLBACK;
        if (num != fieldno) continue;
        if (wt != 2) return FALLBACK;
        /* KeyValue { string key = 1; AnyValue value = 2; } */
        slice_t key = {(const uint8_t *)"", 0}, val = {NULL, 0};
        const uint8_t *q = s.p, *qe = s.p + s.n;
        while (q < qe) {
            int n2, w2;
            slice_t s2 = {0};
            uint64_t v2 = 0;
            if (field(&q, qe, &n2, &w2, &s2, &v2)) return FALLBACK;
            if (n2 == 1) { if (w2 != 2 || utf8_len(s2.p, s2.n) < 0) return FALLBACK; key = s2; }
            else if (n2 == 2) { if (w2 != 2 || val.p) return FALLBACK; val = s2; }
        }
        if (utf8_len(key.p, key.n) < 0 || nk >= MAX_KEYS) return FALLBACK;
        for (int i = 0; i < nk; i++)
            if (keys[i].n == key.n && memcmp(keys[i].p, key.p, key.n) == 0) return FALLBACK;
        keys[nk] = key;
        if (nk && putc_(b, ',')) return NOMEM;
        if (json_str(b, key.p, key.n) || putc_(b, ':')) return NOMEM;
        slice_t sv = {0};
        int is_str = 0;
        if (val.p) r = any_value(b, val.p, val.p + val.n, cx, depth, &sv, &is_str);
        else r = puts_(b, "null");
        if (r) return r;
        if (top) {
            cx->keys[nk] = key;
            cx->strvals[nk] = sv;
            cx->is_str[nk] = is_str;
        }
        nk++;
    }
    if (top) cx->nkeys = nk;
    *count = nk;
    return putc_(b, '}');
}

static int hex_id(buf_t *b, const uint8_t *p, uint64_t n) {
    if (grow(b, (Py_ssize_t)n * 2)) return NOMEM;
    for (uint64_t i = 0; i < n; i++) {
        b->data[b->len++] = HEX[p[i] >> 4];
        b->data[b->len++] = HEX[p[i] & 15];
    }
    return 0;
}

static int nonzero_id(slice_t s, uint64_t size) {
    if (s.n != size) return 0;
    for (uint64_t i = 0; i < size; i++)
        if (s.p[i]) return 1;
    return 0;
}

static int end_str(out_t *o, int col) {
    int32_t off;
    if (o->str[col].len > INT32_MAX) return FALLBACK;
    off = (int32_t)o->str[col].len;
    return put(&o->off[col], &off, 4);
}

static const char *REMOTE_KEYS[] = {"peer.service", "server.address", "net.peer.name", "network.peer.address",
                                    "net.sock.peer.name", "net.sock.peer.addr", "peer.hostname", "peer.address",
                                    "db.name", NULL};

typedef struct {
    slice_t service;     /* the resource's service.name, or unknown_service */
    buf_t resource;      /* resource JSON */
    buf_t scope;         /* scope JSON */
} group_t;

static int span(out_t *o, const uint8_t *p, const uint8_t *end, group_t *g, ctx_t *cx) {
    slice_t trace = {0}, sid = {0}, parent = {0}, name = {(const uint8_t *)"", 0}, status = {0};
    uint64_t kind = 0, start = 0, stop = 0;
    long long nev = 0;
    int has_status = 0, r;
    const uint8_t *q = p;
    while (q < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&q, end, &num, &wt, &s, &v)) return FALLBACK;
        switch (num) {
        case 1: if (wt != 2) return FALLBACK; trace = s; break;
        case 2: if (wt != 2) return FALLBACK; sid = s; break;
        case 3: if (wt != 2 || utf8_len(s.p, s.n) < 0) return FALLBACK; break;
        case 4: if (wt != 2) return FALLBACK; parent = s; break;
        case 5: if (wt != 2 || utf8_len(s.p, s.n) < 0) return FALLBACK; name = s; break;
        case 6: if (wt != 0) return FALLBACK; kind = v; break;
        case 7: if (wt != 1) return FALLBACK; start = v; break;
        case 8: if (wt != 1) return FALLBACK; stop = v; break;
        case 9: case 11: case 13: case 15:
            if (wt != 2) return FALLBACK;
            if (num == 11) nev++;
            if (num == 15) { if (has_status) return FALLBACK; has_status = 1; status = s; }
            break;
        case 10: case 12: case 14: if (wt != 0) return FALLBACK; break;
        case 16: if (wt != 5) return FALLBACK; break;
        default: break;
        }
    }
    if (!nonzero_id(trace, 16) || !nonzero_id(sid, 8) || (parent.n && !nonzero_id(parent, 8))) return FALLBACK;
    if (utf8_len(name.p, name.n) < 0) return FALLBACK;
    int32_t k32 = (int32_t)(uint32_t)kind;
    if (k32 < 0 || k32 > 5) return FALLBACK;
    if (start >= (1ULL << 63) || stop >= (1ULL << 63)) return FALLBACK;
    if (nev > cx->lim->max_events) return FALLBACK;
    /* status */
    int64_t code = 0;
    slice_t msg = {(const uint8_t *)"", 0};
    if (has_status) {
        const uint8_t *sq = status.p, *se = status.p + status.n;
        while (sq < se) {
            int num, wt;
            slice_t s = {0};
            uint64_t v = 0;
            if (field(&sq, se, &num, &wt, &s, &v)) return FALLBACK;
            if (num == 2) { if (wt != 2 || utf8_len(s.p, s.n) < 0) return FALLBACK; msg = s; }
            else if (num == 3) { if (wt != 0) return FALLBACK; code = (int32_t)(uint32_t)v; }
            else if (num == 1) { if (wt != 0) return FALLBACK; }
        }
        if (code < 0 || code > 2) code = 0;
    }
    /* attributes */
    long long nattr = 0;
    if ((r = kv_object(&o->str[S_ATTRS], p, end, 9, cx, 0, &nattr, 1))) return r;
    if (nattr > cx->lim->max_attrs) return FALLBACK;
    if ((r = end_str(o, S_ATTRS))) return r;
    /* remote service of CLIENT (3) / PRODUCER (4) spans */
    if (k32 == 3 || k32 == 4) {
        int found = 0;
        for (int i = 0; REMOTE_KEYS[i] && !found; i++) {
            size_t kl = strlen(REMOTE_KEYS[i]);
            for (int j = 0; j < cx->nkeys; j++) {
                if (cx->keys[j].n == kl && memcmp(cx->keys[j].p, REMOTE_KEYS[i], kl) == 0) {
                    if (cx->is_str[j] && cx->strvals[j].n) {
                        if (put(&o->str[S_REMOTE], cx->strvals[j].p, (Py_ssize_t)cx->strvals[j].n)) return NOMEM;
                        found = 1;
                    }
                    break;
                }
            }
        }
    }
    if ((r = end_str(o, S_REMOTE))) return r;
    /* events: [{"t":..,"name":..,"attributes":{..}}] */
    buf_t *eb = &o->str[S_EVENTS];
    if (nev) {
        int first = 1;
        if (putc_(eb, '[')) return NOMEM;
        q = p;
        while (q < end) {
            int num, wt;
            slice_t s = {0};
            uint64_t v = 0;
            if (field(&q, end, &num, &wt, &s, &v)) return FALLBACK;
            if (num != 11) continue;
            uint64_t t = 0;
            slice_t en = {(const uint8_t *)"", 0};
            const uint8_t *eq = s.p, *ee = s.p + s.n;
            while (eq < ee) {
                int n2, w2;
                slice_t s2 = {0};
                uint64_t v2 = 0;
                if (field(&eq, ee, &n2, &w2, &s2, &v2)) return FALLBACK;
                if (n2 == 1) { if (w2 != 1) return FALLBACK; t = v2; }
                else if (n2 == 2) { if (w2 != 2 || utf8_len(s2.p, s2.n) < 0) return FALLBACK; en = s2; }
                else if (n2 == 3) { if (w2 != 2) return FALLBACK; }
                else if (n2 == 4) { if (w2 != 0) return FALLBACK; }
            }
            if (t >= (1ULL << 63) || utf8_len(en.p, en.n) < 0) return FALLBACK;
            if (!first && putc_(eb, ',')) return NOMEM;
            first = 0;
            if (puts_(eb, "{\"t\":") || json_i64(eb, (int64_t)t) || puts_(eb, ",\"name\":") ||
                json_str(eb, en.p, en.n) || puts_(eb, ",\"attributes\":"))
                return NOMEM;
            long long na = 0;
            if ((r = kv_object(eb, s.p, s.p + s.n, 3, cx, 0, &na, 0))) return r;
            if (na > cx->lim->max_attrs) return FALLBACK;
            if (putc_(eb, '}')) return NOMEM;
        }
        if (putc_(eb, ']')) return NOMEM;
    }
    if ((r = end_str(o, S_EVENTS))) return r;
    /* links: [{"traceId":..,"spanId":..,"traceState":..,"attributes":{..}}] */
    buf_t *lb = &o->str[S_LINKS];
    int first_link = 1;
    q = p;
    while (q < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&q, end, &num, &wt, &s, &v)) return FALLBACK;
        if (num != 13) continue;
        slice_t lt = {0}, ls = {0}, st = {(const uint8_t *)"", 0};
        const uint8_t *lq = s.p, *le = s.p + s.n;
        while (lq < le) {
            int n2, w2;
            slice_t s2 = {0};
            uint64_t v2 = 0;
            if (field(&lq, le, &n2, &w2, &s2, &v2)) return FALLBACK;
            if (n2 == 1) { if (w2 != 2) return FALLBACK; lt = s2; }
            else if (n2 == 2) { if (w2 != 2) return FALLBACK; ls = s2; }
            else if (n2 == 3) { if (w2 != 2 || utf8_len(s2.p, s2.n) < 0) return FALLBACK; st = s2; }
            else if (n2 == 4) { if (w2 != 2) return FALLBACK; }
            else if (n2 == 5) { if (w2 != 0) return FALLBACK; }
            else if (n2 == 6) { if (w2 != 5) return FALLBACK; }
        }
        if (!nonzero_id(lt, 16) || !nonzero_id(ls, 8) || utf8_len(st.p, st.n) < 0) return FALLBACK;
        if (putc_(lb, first_link ? '[' : ',')) return NOMEM;
        first_link = 0;
        if (puts_(lb, "{\"traceId\":\"") || hex_id(lb, lt.p, 16) || puts_(lb, "\",\"spanId\":\"") ||
            hex_id(lb, ls.p, 8) || puts_(lb, "\",\"traceState\":") || json_str(lb, st.p, st.n) ||
            puts_(lb, ",\"attributes\":"))
            return NOMEM;
        long long na = 0;
        if ((r = kv_object(lb, s.p, s.p + s.n, 4, cx, 0, &na, 0))) return r;
        if (na > cx->lim->max_attrs) return FALLBACK;
        if (putc_(lb, '}')) return NOMEM;
    }
    if (!first_link && putc_(lb, ']')) return NOMEM;
    if ((r = end_str(o, S_LINKS))) return r;
    /* fixed columns */
    if (hex_id(&o->str[S_TRACE], trace.p, 16) || (r = end_str(o, S_TRACE))) return r ? r : NOMEM;
    if (hex_id(&o->str[S_SPAN], sid.p, 8) || (r = end_str(o, S_SPAN))) return r ? r : NOMEM;
    if (hex_id(&o->str[S_PARENT], parent.p, parent.n) || (r = end_str(o, S_PARENT))) return r ? r : NOMEM;
    if (put(&o->str[S_SERVICE], g->service.p, (Py_ssize_t)g->service.n) || (r = end_str(o, S_SERVICE)))
        return r ? r : NOMEM;
    if (put(&o->str[S_NAME], name.p, (Py_ssize_t)name.n) || (r = end_str(o, S_NAME))) return r ? r : NOMEM;
    if (put(&o->str[S_STATUS_MSG], msg.p, (Py_ssize_t)msg.n) || (r = end_str(o, S_STATUS_MSG)))
        return r ? r : NOMEM;
    if (put(&o->str[S_RESOURCE], g->resource.data, g->resource.len) || (r = end_str(o, S_RESOURCE)))
        return r ? r : NOMEM;
    if (put(&o->str[S_SCOPE], g->scope.data, g->scope.len) || (r = end_str(o, S_SCOPE))) return r ? r : NOMEM;
    uint64_t tk = 0;
    for (int i = 8; i < 16; i++) tk = (tk << 8) | trace.p[i];
    int64_t tkey = (int64_t)tk, st64 = (int64_t)start, dur = stop > start ? (int64_t)(stop - start) : 0;
    int8_t k8 = (int8_t)k32, c8 = (int8_t)code;
    if (put(&o->ints[0], &tkey, 8) || put(&o->ints[1], &st64, 8) || put(&o->ints[2], &dur, 8) ||
        put(&o->i8s[0], &k8, 1) || put(&o->i8s[1], &c8, 1))
        return NOMEM;
    o->n++;
    return 0;
}

static int scope_spans(out_t *o, const uint8_t *p, const uint8_t *end, group_t *g, ctx_t *cx) {
    /* pass 1: the scope (it may follow the spans on the wire) */
    slice_t scope = {0};
    int has_scope = 0, r;
    const uint8_t *q = p;
    while (q < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&q, end, &num, &wt, &s, &v)) return FALLBACK;
        if (num == 1) { if (wt != 2 || has_scope) return FALLBACK; has_scope = 1; scope = s; }
        else if (num == 2) { if (wt != 2) return FALLBACK; }
        else if (num == 3) { if (wt != 2 || utf8_len(s.p, s.n) < 0) return FALLBACK; } /* schema_url */
    }
    slice_t sn = {(const uint8_t *)"", 0}, sv = {(const uint8_t *)"", 0};
    if (has_scope) {
        const uint8_t *sq = scope.p, *se = scope.p + scope.n;
        while (sq < se) {
            int num, wt;
            slice_t s = {0};
            uint64_t v = 0;
            if (field(&sq, se, &num, &wt, &s, &v)) return FALLBACK;
            if (num == 1) { if (wt != 2 || utf8_len(s.p, s.n) < 0) return FALLBACK; sn = s; }
            else if (num == 2) { if (wt != 2 || utf8_len(s.p, s.n) < 0) return FALLBACK; sv = s; }
            /* Scope attributes are rare and not stored: upb checks their strings. */
            else if (num == 3) return FALLBACK;
            else if (num == 4) { if (wt != 0) return FALLBACK; }
        }
        if (utf8_len(sn.p, sn.n) < 0 || utf8_len(sv.p, sv.n) < 0) return FALLBACK;
    }
    g->scope.len = 0;
    if (sn.n) {
        if (puts_(&g->scope, "{\"name\":") || json_str(&g->scope, sn.p, sn.n) || puts_(&g->scope, ",\"version\":") ||
            json_str(&g->scope, sv.p, sv.n) || putc_(&g->scope, '}'))
            return NOMEM;
    }
    q = p;
    while (q < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&q, end, &num, &wt, &s, &v)) return FALLBACK;
        if (num != 2) continue;
        if (o->n >= cx->lim->max_spans) return FALLBACK;
        if ((r = span(o, s.p, s.p + s.n, g, cx))) return r;
    }
    return 0;
}

static int resource_spans(out_t *o, const uint8_t *p, const uint8_t *end, group_t *g, ctx_t *cx) {
    slice_t res = {0};
    int has_res = 0, r;
    const uint8_t *q = p;
    while (q < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&q, end, &num, &wt, &s, &v)) return FALLBACK;
        if (num == 1) { if (wt != 2 || has_res) return FALLBACK; has_res = 1; res = s; }
        else if (num == 2) { if (wt != 2) return FALLBACK; }
        else if (num == 3) { if (wt != 2 || utf8_len(s.p, s.n) < 0) return FALLBACK; }
    }
    g->resource.len = 0;
    long long na = 0;
    if (has_res) {
        /* Resource { repeated KeyValue attributes = 1; uint32 dropped = 2; repeated EntityRef = 3; } */
        const uint8_t *rq = res.p, *re = res.p + res.n;
        while (rq < re) {
            int num, wt;
            slice_t s = {0};
            uint64_t v = 0;
            if (field(&rq, re, &num, &wt, &s, &v)) return FALLBACK;
            if (num == 1 && wt != 2) return FALLBACK;
            if (num == 2 && wt != 0) return FALLBACK;
            if (num == 3) return FALLBACK; /* entity refs: rare, and their strings are upb's to check */
        }
        if ((r = kv_object(&g->resource, res.p, res.p + res.n, 1, cx, 0, &na, 1))) return r;
        if (na > cx->lim->max_attrs) return FALLBACK;
    } else if (puts_(&g->resource, "{}")) {
        return NOMEM;
    }
    g->service.p = (const uint8_t *)"unknown_service";
    g->service.n = 15;
    if (has_res) {
        for (int j = 0; j < cx->nkeys; j++) {
            if (cx->keys[j].n == 12 && memcmp(cx->keys[j].p, "service.name", 12) == 0) {
                if (cx->is_str[j] && cx->strvals[j].n) g->service = cx->strvals[j];
                break;
            }
        }
    }
    q = p;
    while (q < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&q, end, &num, &wt, &s, &v)) return FALLBACK;
        if (num != 2) continue;
        if ((r = scope_spans(o, s.p, s.p + s.n, g, cx))) return r;
    }
    return 0;
}

static void out_free(out_t *o) {
    for (int i = 0; i < 3; i++) PyMem_RawFree(o->ints[i].data);
    for (int i = 0; i < 2; i++) PyMem_RawFree(o->i8s[i].data);
    for (int i = 0; i < NSTR; i++) {
        PyMem_RawFree(o->off[i].data);
        PyMem_RawFree(o->str[i].data);
    }
}

static PyObject *bytes_of(buf_t *b) { return PyBytes_FromStringAndSize(b->data ? b->data : "", b->len); }

static PyObject *concat(buf_t *bs, int k) {
    Py_ssize_t total = 0;
    for (int i = 0; i < k; i++) total += bs[i].len;
    PyObject *r = PyBytes_FromStringAndSize(NULL, total);
    if (!r) return NULL;
    char *d = PyBytes_AS_STRING(r);
    for (int i = 0; i < k; i++) {
        if (bs[i].len) memcpy(d, bs[i].data, bs[i].len);
        d += bs[i].len;
    }
    return r;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer view;
    limits_t lim;
    if (!PyArg_ParseTuple(args, "y*LLLL", &view, &lim.max_spans, &lim.max_attrs, &lim.max_value_len,
                          &lim.max_events))
        return NULL;
    out_t o;
    memset(&o, 0, sizeof o);
    group_t g;
    memset(&g, 0, sizeof g);
    ctx_t *cx = PyMem_RawCalloc(1, sizeof(ctx_t));
    int err = 0;
    if (!cx) err = NOMEM;
    else cx->lim = &lim;
    /* The GIL stays held: float formatting uses CPython's allocator. */
    int32_t zero = 0;
    for (int i = 0; i < NSTR && !err; i++) err = put(&o.off[i], &zero, 4);
    const uint8_t *p = view.buf, *end = p + view.len;
    while (!err && p < end) {
        int num, wt;
        slice_t s = {0};
        uint64_t v = 0;
        if (field(&p, end, &num, &wt, &s, &v)) { err = FALLBACK; break; }
        if (num != 1) continue;
        if (wt != 2) { err = FALLBACK; break; }
        err = resource_spans(&o, s.p, s.p + s.n, &g, cx);
    }
    PyBuffer_Release(&view);
    PyMem_RawFree(cx);
    PyMem_RawFree(g.resource.data);
    PyMem_RawFree(g.scope.data);
    PyObject *res = NULL;
    if (err == NOMEM) {
        PyErr_NoMemory();
    } else if (err) {
        res = Py_NewRef(Py_None);
    } else {
        PyObject *strs = PyTuple_New(NSTR);
        PyObject *ints = concat(o.ints, 3), *i8s = concat(o.i8s, 2);
        int ok = strs && ints && i8s;
        for (int i = 0; ok && i < NSTR; i++) {
            PyObject *pair = Py_BuildValue("(NN)", bytes_of(&o.off[i]), bytes_of(&o.str[i]));
            if (!pair) ok = 0;
            else PyTuple_SET_ITEM(strs, i, pair);
        }
        if (ok) res = Py_BuildValue("(nNNN)", o.n, ints, i8s, strs);
        else {
            Py_XDECREF(strs);
            Py_XDECREF(ints);
            Py_XDECREF(i8s);
        }
    }
    out_free(&o);
    return res;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, "Decode an OTLP ExportTraceServiceRequest into span column buffers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp_traces", NULL, -1, methods};

PyMODINIT_FUNC PyInit__otlp_traces(void) { return PyModule_Create(&module); }
