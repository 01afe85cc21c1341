/*
 * C helpers of the metrics read path's per-sample loops.
 *
 * gather(chunks, sids, start, end, account) -> (counts, ts, vals)
 *
 *   The samples of a few series in [start, end] from the head's chunks
 *   (pitwall.storage.metrics.merge.gather_few's answer, as bytearrays of
 *   int64, int64 and float64): series in ``sids`` order, each in time order.
 *     chunks  list of (s0, starts, sid, ts, val): a chunk's columns (rows
 *             grouped by sid, in time order within a sid) and its
 *             sid_starts (sid s0 + i owns rows starts[i]:starts[i + 1];
 *             starts None: binary search on sid); later chunks hold later
 *             samples of a sid,
 *     sids    int64 buffer,
 *     account None or a callable told of each chunk's number of samples
 *             found, before any is copied; it may raise to stop the read.
 *   A series' window in a chunk is two binary searches on its times; its
 *   samples are copied with memcpy.
 *
 * instant_fill(offsets, ts, vals, times, lookback, out_vals, out_present, out_ts)
 *
 *   An instant selector at every step (pitwall.metrics.promql.selectors.
 *   instant_from_flat): for series s (samples offsets[s]:offsets[s + 1] of
 *   the flat ts and vals, in time order) and step t (``times``,
 *   non-decreasing), the latest sample at or before times[t]; present when
 *   it is the series' own, newer than times[t] - lookback and not a
 *   staleness marker. Fills the (S, T) outputs (float64, bool, int64) with
 *   the numpy path's exact values, absent cells included: they hold the
 *   sample at the flat index before the series' window (or 0).
 *
 * window_fill(offsets, ts, times, range_ms, out_lo, out_hi)
 *
 *   A range selector's windows (t - range, t] at every step: out_hi[s, t]
 *   is one past the flat index of series s's last sample at or before
 *   times[t] (times non-decreasing), out_lo[s, t] the same for
 *   times[t] - range_ms (int64 (S, T) outputs), as
 *   pitwall.metrics.promql.selectors._window_bounds computes them.
 *
 * window_extreme(vals, first, counts, out, want_max)
 *
 *   max_over_time (want_max true) or min_over_time of each window
 *   vals[first[i]:first[i] + counts[i]] (counts >= 1) into out[i], with
 *   Prometheus' loop: a value replaces the extreme when beyond it or when
 *   the extreme is NaN (so NaN only when every value is).
 *
 * window_sum(vals, first, counts, out, mean)
 *
 *   sum_over_time (mean false) or avg_over_time of each window, as
 *   Prometheus 3 computes them: a Kahan-Neumaier sum; the mean switches to
 *   an incremental mean (itself compensated) once the sum overflows.
 *
 * window_variance(vals, first, counts, out)
 *
 *   stdvar_over_time of each window: Prometheus' Welford loop with both
 *   running sums Kahan-compensated, (aux + c_aux) / count.
 *
 * window_regression(vals, ts, first, counts, intercept_ms, out_slope, out_intercept)
 *
 *   Prometheus' linearRegression (deriv, predict_linear) of each window
 *   (counts >= 1): Kahan sums of x, y, xy, x^2 with x = (ts - intercept_ms)
 *   / 1e3; a constant window has slope 0 and its value as intercept (both
 *   NaN when that value is infinite).
 *
 * window_quantile(vals, first, counts, q, out)
 *
 *   quantile_over_time of each window (counts >= 1) at its own q[i]:
 *   Prometheus' order (NaNs first, then ascending; -0 before +0 here, where
 *   Go's and numpy's sorts leave equal zeros in no defined order), rank
 *   q * (n - 1) interpolated linearly; q < 0 gives -Inf, q > 1 +Inf, NaN NaN.
 *
 * matrix_json(series, counts, ts, vals, values_text) -> bytes | None
 *
 *   The JSON text of a matrix result's ``result`` array,
 *   ``[{"metric":{...},"values":[[<seconds>,"<value>"],...]},...]``, with
 *   exactly the bytes of the pure-Python path (pitwall.metrics.promql.encode):
 *     series      list of label sets (tuples of (name, value) str pairs),
 *     counts      int64 buffer, points per series,
 *     ts          int64 buffer, every point's time (ms), series after series,
 *     vals        float64 buffer, every point's value, in the same order,
 *     values_text a callable returning orjson's text of all of ``vals``
 *                 (``[v0,v1,...]``); called at most once, and only when a
 *                 value is not a small integer: orjson's shortest digits
 *                 are reused, only their spelling is changed to Go's 'f'.
 *   Labels are escaped as orjson escapes them ("\\", "\"", control
 *   characters). Times are seconds, with up to three decimals when not
 *   whole. Returns None when a time is too far from the epoch for that
 *   spelling to be the shortest (|t| >= 1e15 ms): the caller falls back.
 *
 * The loops build one growing buffer; no Python object per point.
 */
#define PY_SSIZE_T_CLEAN
/* Sums must round exactly as Prometheus' Go loops do: no fused multiply-adds. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} out_t;

/* Room for n more bytes; -1 (MemoryError set) when it cannot grow. */
static int reserve(out_t *o, Py_ssize_t n) {
    if (o->len + n <= o->cap) return 0;
    Py_ssize_t nc = o->cap ? o->cap : 4096;
    while (nc < o->len + n) nc *= 2;
    char *nd = PyMem_Realloc(o->data, nc);
    if (!nd) { PyErr_NoMemory(); return -1; }
    o->data = nd;
    o->cap = nc;
    return 0;
}

static inline void put(out_t *o, const char *s, Py_ssize_t n) {
    memcpy(o->data + o->len, s, n);
    o->len += n;
}

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Decimal digits of u (no sign) at p, two at a time; returns their count (at most 20). */
static int utoa(uint64_t u, char *p) {
    char tmp[24];
    char *q = tmp + sizeof(tmp);
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        q -= 2;
        memcpy(q, DIGIT_PAIRS + 2 * r, 2);
    }
    if (u >= 10) {
        q -= 2;
        memcpy(q, DIGIT_PAIRS + 2 * u, 2);
    } else {
        *--q = (char)('0' + u);
    }
    int n = (int)(tmp + sizeof(tmp) - q);
    memcpy(p, q, n);
    return n;
}

/* Largest magnitude (ms) whose seconds text "S.mmm" (zeros stripped) is the float's shortest text. */
#define MAX_TIME_MS 1000000000000000LL

/* A time in ms as Prometheus' JSON seconds at p (at most 22 bytes): integral when whole, else up to 3 decimals. */
static int seconds_text(int64_t t, char *p) {
    int n = 0;
    uint64_t a = t < 0 ? (uint64_t)(-t) : (uint64_t)t;
    if (t < 0) p[n++] = '-';
    n += utoa(a / 1000, p + n);
    unsigned frac = (unsigned)(a % 1000);
    if (frac) {
        p[n++] = '.';
        p[n++] = (char)('0' + frac / 100);
        if (frac % 100) {
            p[n++] = (char)('0' + frac / 10 % 10);
            if (frac % 10) p[n++] = (char)('0' + frac % 10);
        }
    }
    return n;
}

/* The seconds text of the j-th point of the last series that had one: series of a range
 * query's matrix mostly share their times, so each time is spelled once. */
typedef struct {
    int64_t t;
    int n;
    char text[20];
} time_text_t;

/* orjson's exponent form of a finite float ("-1.5e-7", "1e16") as Go's 'f' text: the same digits, placed. */
static int put_positional(out_t *o, const char *tok, Py_ssize_t n) {
    const char *p = tok, *end = tok + n;
    int neg = 0;
    if (p < end && *p == '-') { neg = 1; p++; }
    char digits[64];
    int nd = 0, int_len = 0, seen_point = 0;
    for (; p < end && *p != 'e' && *p != 'E'; p++) {
        if (*p == '.') { seen_point = 1; continue; }
        if (*p < '0' || *p > '9' || nd >= (int)sizeof(digits)) return -2;
        digits[nd++] = *p;
        if (!seen_point) int_len++;
    }
    if (p >= end) return -2;
    p++;
    int eneg = 0, e = 0;
    if (p < end && (*p == '-' || *p == '+')) { eneg = *p == '-'; p++; }
    if (p >= end) return -2;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || e > 100000) return -2;
        e = e * 10 + (*p - '0');
    }
    if (eneg) e = -e;
    int lz = 0;
    while (lz < nd && digits[lz] == '0') lz++;
    const char *d = digits + lz;
    int k = nd - lz;
    while (k > 0 && d[k - 1] == '0') k--;
    /* value == 0.D * 10**dp */
    int dp = int_len - lz + e;
    if (reserve(o, (Py_ssize_t)k + (dp < 0 ? -dp : dp) + 8)) return -1;
    if (neg) put(o, "-", 1);
    if (!k) { put(o, "0", 1); return 0; }
    if (dp <= 0) {
        put(o, "0.", 2);
        for (int i = 0; i < -dp; i++) o->data[o->len++] = '0';
        put(o, d, k);
    } else if (dp >= k) {
        put(o, d, k);
        for (int i = 0; i < dp - k; i++) o->data[o->len++] = '0';
    } else {
        put(o, d, dp);
        put(o, ".", 1);
        put(o, d + dp, k - dp);
    }
    return 0;
}

/* A label name or value as a JSON string, escaped as orjson escapes it. */
static int put_json_string(out_t *o, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) return -1;
    if (reserve(o, 6 * n + 2)) return -1;
    char *p = o->data + o->len;
    *p++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c >= 0x20 && c != '"' && c != '\\') { *p++ = (char)c; continue; }
        *p++ = '\\';
        switch (c) {
        case '"': *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case '\b': *p++ = 'b'; break;
        case '\t': *p++ = 't'; break;
        case '\n': *p++ = 'n'; break;
        case '\f': *p++ = 'f'; break;
        case '\r': *p++ = 'r'; break;
        default:
            *p++ = 'u'; *p++ = '0'; *p++ = '0';
            *p++ = "0123456789abcdef"[c >> 4];
            *p++ = "0123456789abcdef"[c & 15];
        }
    }
    *p++ = '"';
    o->len = p - o->data;
    return 0;
}

/* {"metric":{"name":"value",...},"values":[ */
static int put_head(out_t *o, PyObject *labels) {
    PyObject *seq = PySequence_Fast(labels, "a label set must be a sequence of (name, value) pairs");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int rc = -1;
    if (reserve(o, 16)) goto done;
    put(o, "{\"metric\":{", 11);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a label must be a (name, value) tuple");
            goto done;
        }
        if (i) {
            if (reserve(o, 1)) goto done;
            put(o, ",", 1);
        }
        if (put_json_string(o, PyTuple_GET_ITEM(pair, 0)) || reserve(o, 1)) goto done;
        put(o, ":", 1);
        if (put_json_string(o, PyTuple_GET_ITEM(pair, 1))) goto done;
    }
    if (reserve(o, 16)) goto done;
    put(o, "},\"values\":[", 12);
    rc = 0;
done:
    Py_DECREF(seq);
    return rc;
}

/* orjson's text of the values, walked token by token. */
typedef struct {
    PyObject *callable, *text;
    const char *p, *end;
    Py_ssize_t index; /* the token p points at */
} tokens_t;

/* Token i (indices only grow): its start and length; -1 with an exception set on failure. */
static int token_at(tokens_t *tk, Py_ssize_t i, const char **start, Py_ssize_t *len) {
    if (!tk->text) {
        tk->text = PyObject_CallNoArgs(tk->callable);
        if (!tk->text) return -1;
        if (!PyBytes_Check(tk->text) || PyBytes_GET_SIZE(tk->text) < 2) {
            PyErr_SetString(PyExc_TypeError, "values_text must return the bytes of a JSON array");
            return -1;
        }
        tk->p = PyBytes_AS_STRING(tk->text) + 1;
        tk->end = PyBytes_AS_STRING(tk->text) + PyBytes_GET_SIZE(tk->text) - 1;
        tk->index = 0;
    }
    for (; tk->index < i; tk->index++) {
        const char *c = memchr(tk->p, ',', tk->end - tk->p);
        if (!c) goto short_text;
        tk->p = c + 1;
    }
    const char *c = memchr(tk->p, ',', tk->end - tk->p);
    const char *stop = c ? c : tk->end;
    if (stop == tk->p) goto short_text;
    *start = tk->p;
    *len = stop - tk->p;
    return 0;
short_text:
    PyErr_SetString(PyExc_ValueError, "values_text has fewer values than vals");
    return -1;
}

/* Value i as Go's strconv.FormatFloat(v, 'f', -1, 64). */
static int put_value(out_t *o, double v, tokens_t *tk, Py_ssize_t i) {
    if (v == 0.0) {
        if (reserve(o, 2)) return -1;
        if (signbit(v)) put(o, "-0", 2); else put(o, "0", 1);
        return 0;
    }
    if (isnan(v) || isinf(v)) {
        if (reserve(o, 4)) return -1;
        if (isnan(v)) put(o, "NaN", 3); else if (v > 0) put(o, "+Inf", 4); else put(o, "-Inf", 4);
        return 0;
    }
    if (fabs(v) < 1e15 && v == (double)(int64_t)v) {
        /* A small integer: its digits are the shortest text, no need for orjson's. */
        if (reserve(o, 24)) return -1;
        int64_t k = (int64_t)v;
        if (k < 0) put(o, "-", 1);
        o->len += utoa(k < 0 ? (uint64_t)(-k) : (uint64_t)k, o->data + o->len);
        return 0;
    }
    const char *tok;
    Py_ssize_t n;
    if (token_at(tk, i, &tok, &n)) return -1;
    if (memchr(tok, 'e', n) || memchr(tok, 'E', n)) {
        int rc = put_positional(o, tok, n);
        if (rc == -2) PyErr_SetString(PyExc_ValueError, "unexpected number text in values_text");
        return rc ? -1 : 0;
    }
    if (n >= 2 && tok[n - 2] == '.' && tok[n - 1] == '0') n -= 2; /* orjson's 2.0 is Go's 2 */
    if (reserve(o, n)) return -1;
    put(o, tok, n);
    return 0;
}

/* A one-dimensional contiguous buffer of 8-byte items whose struct code is one of ``codes``. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *codes, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)) return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++; /* native order (x86-64 and aarch64 are little-endian) */
    if (view->itemsize != 8 || view->ndim > 1 || strlen(f) != 1 || !strchr(codes, *f)) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous one-dimensional %s array", what,
                     strchr(codes, 'd') ? "float64" : "int64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ``get_buffer`` for an output: writable as well. */
static int get_out_buffer(PyObject *obj, Py_buffer *view, const char *codes, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE)) return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (view->itemsize != (*codes == '?' ? 1 : 8) || strlen(f) != 1 || !strchr(codes, *f)) {
        PyErr_Format(PyExc_TypeError, "%s must be a writable contiguous array of the right type", what);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* n buffers of objs: the first n_in read, the rest written; returns 0, or -1 with all released. */
static int get_buffers(PyObject **objs, Py_buffer *b, int n, int n_in, const char **codes, const char **names) {
    for (int i = 0; i < n; i++) {
        if (i < n_in ? get_buffer(objs[i], &b[i], codes[i], names[i])
                     : get_out_buffer(objs[i], &b[i], codes[i], names[i])) {
            while (i--) PyBuffer_Release(&b[i]);
            return -1;
        }
    }
    return 0;
}

/* Releases the n buffers; None when ok, else NULL (the error is set). */
static PyObject *finish(Py_buffer *b, int n, int ok) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&b[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *matrix_json(PyObject *self, PyObject *args) {
    PyObject *series, *counts_obj, *ts_obj, *vals_obj, *values_text;
    if (!PyArg_ParseTuple(args, "O!OOOO:matrix_json", &PyList_Type, &series, &counts_obj, &ts_obj, &vals_obj,
                          &values_text))
        return NULL;
    Py_buffer cv, tv, vv;
    if (get_buffer(counts_obj, &cv, "ql", "counts")) return NULL;
    if (get_buffer(ts_obj, &tv, "ql", "ts")) { PyBuffer_Release(&cv); return NULL; }
    if (get_buffer(vals_obj, &vv, "d", "vals")) { PyBuffer_Release(&cv); PyBuffer_Release(&tv); return NULL; }
    const int64_t *counts = cv.buf, *ts = tv.buf;
    const double *vals = vv.buf;
    Py_ssize_t ns = PyList_GET_SIZE(series), npts = tv.len / 8;
    out_t o = {0};
    tokens_t tk = {values_text, NULL, NULL, NULL, 0};
    PyObject *res = NULL;
    time_text_t *times = NULL;
    int fallback = 0;
    if (cv.len / 8 != ns || vv.len / 8 != npts) {
        PyErr_SetString(PyExc_ValueError, "series, counts, ts and vals do not match");
        goto done;
    }
    for (Py_ssize_t i = 0; i < npts; i++) {
        if (ts[i] >= MAX_TIME_MS || ts[i] <= -MAX_TIME_MS) { fallback = 1; goto done; }
    }
    Py_ssize_t at = 0, longest = 0;
    for (Py_ssize_t i = 0; i < ns; i++) {
        if (counts[i] < 0 || counts[i] > npts) {
            PyErr_SetString(PyExc_ValueError, "counts exceed the points");
            goto done;
        }
        if (counts[i] > longest) longest = counts[i];
    }
    times = PyMem_Calloc(longest ? longest : 1, sizeof(time_text_t));
    if (!times) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t j = 0; j < longest; j++) times[j].t = INT64_MIN; /* never a time here */
    if (reserve(&o, 2)) goto done;
    put(&o, "[", 1);
    for (Py_ssize_t s = 0; s < ns; s++) {
        if (counts[s] > npts - at) {
            PyErr_SetString(PyExc_ValueError, "counts exceed the points");
            goto done;
        }
        if (s) {
            if (reserve(&o, 1)) goto done;
            put(&o, ",", 1);
        }
        if (put_head(&o, PyList_GET_ITEM(series, s))) goto done;
        for (Py_ssize_t j = 0; j < counts[s]; j++, at++) {
            if (reserve(&o, 32)) goto done;
            if (j) put(&o, ",", 1);
            put(&o, "[", 1);
            time_text_t *tt = &times[j];
            if (tt->t != ts[at]) {
                tt->t = ts[at];
                tt->n = seconds_text(ts[at], tt->text);
            }
            put(&o, tt->text, tt->n);
            put(&o, ",\"", 2);
            if (put_value(&o, vals[at], &tk, at) || reserve(&o, 2)) goto done;
            put(&o, "\"]", 2);
        }
        if (reserve(&o, 2)) goto done;
        put(&o, "]}", 2);
    }
    if (at != npts) {
        PyErr_SetString(PyExc_ValueError, "counts do not add up to the points");
        goto done;
    }
    if (reserve(&o, 1)) goto done;
    put(&o, "]", 1);
    res = PyBytes_FromStringAndSize(o.data, o.len);
done:
    PyMem_Free(o.data);
    PyMem_Free(times);
    Py_XDECREF(tk.text);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&vv);
    if (fallback) Py_RETURN_NONE;
    return res;
}

/* First index in k[lo:hi] whose value is >= x (right: > x). */
static Py_ssize_t bisect(const int64_t *k, Py_ssize_t lo, Py_ssize_t hi, int64_t x, int right) {
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (k[mid] < x || (right && k[mid] == x)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

typedef struct {
    int64_t s0;
    Py_buffer starts, sid, ts, val;
    int has_starts;
    int held; /* buffers acquired, in the order sid, ts, val, starts */
} chunk_t;

static void release_chunks(chunk_t *ch, Py_ssize_t n) {
    for (Py_ssize_t c = 0; c < n; c++) {
        if (ch[c].held > 0) PyBuffer_Release(&ch[c].sid);
        if (ch[c].held > 1) PyBuffer_Release(&ch[c].ts);
        if (ch[c].held > 2) PyBuffer_Release(&ch[c].val);
        if (ch[c].held > 3) PyBuffer_Release(&ch[c].starts);
    }
}

static int get_chunk(PyObject *item, chunk_t *c) {
    PyObject *starts, *sid, *ts, *val;
    if (!PyArg_ParseTuple(item, "LOOOO:chunk", &c->s0, &starts, &sid, &ts, &val)) return -1;
    if (get_buffer(sid, &c->sid, "ql", "sid")) return -1;
    c->held = 1;
    if (get_buffer(ts, &c->ts, "ql", "ts")) return -1;
    c->held = 2;
    if (get_buffer(val, &c->val, "d", "vals")) return -1;
    c->held = 3;
    if (c->ts.len != c->sid.len || c->val.len != c->sid.len) {
        PyErr_SetString(PyExc_ValueError, "a chunk's sid, ts and val differ in length");
        return -1;
    }
    if (starts == Py_None) return 0;
    if (get_buffer(starts, &c->starts, "ql", "starts")) return -1;
    c->held = 4;
    c->has_starts = 1;
    const int64_t *st = c->starts.buf;
    Py_ssize_t n = c->starts.len / 8;
    if (n < 1 || st[0] < 0 || st[n - 1] > c->sid.len) {
        PyErr_SetString(PyExc_ValueError, "a chunk's starts are outside its rows");
        return -1;
    }
    return 0;
}

/* Rows [*a, *b) of sid in chunk c. */
static void sid_rows(const chunk_t *c, int64_t sid, Py_ssize_t *a, Py_ssize_t *b) {
    if (c->has_starts) {
        const int64_t *st = c->starts.buf;
        int64_t rel = sid - c->s0;
        if (rel < 0 || rel >= c->starts.len / 8 - 1) { *a = *b = 0; return; }
        *a = (Py_ssize_t)st[rel];
        *b = (Py_ssize_t)st[rel + 1];
        if (*b < *a) *b = *a;
        return;
    }
    const int64_t *s = c->sid.buf;
    Py_ssize_t n = c->sid.len / 8;
    *a = bisect(s, 0, n, sid, 0);
    *b = bisect(s, *a, n, sid, 1);
}

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *chunks_obj, *sids_obj, *account;
    long long start, end;
    if (!PyArg_ParseTuple(args, "O!OLLO:gather", &PyList_Type, &chunks_obj, &sids_obj, &start, &end, &account))
        return NULL;
    Py_ssize_t nc = PyList_GET_SIZE(chunks_obj);
    Py_buffer sv;
    if (get_buffer(sids_obj, &sv, "ql", "sids")) return NULL;
    const int64_t *sids = sv.buf;
    Py_ssize_t ns = sv.len / 8;
    chunk_t *ch = PyMem_Calloc(nc ? nc : 1, sizeof(chunk_t));
    Py_ssize_t *bounds = PyMem_Calloc(2 * (nc * ns > 0 ? nc * ns : 1), sizeof(Py_ssize_t));
    PyObject *counts = NULL, *ts_out = NULL, *val_out = NULL, *res = NULL;
    if (!ch || !bounds) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t c = 0; c < nc; c++)
        if (get_chunk(PyList_GET_ITEM(chunks_obj, c), &ch[c])) goto done;
    counts = PyByteArray_FromStringAndSize(NULL, ns * 8);
    if (!counts) goto done;
    int64_t *cnt = (int64_t *)PyByteArray_AS_STRING(counts);
    memset(cnt, 0, ns * 8);
    Py_ssize_t total = 0;
    for (Py_ssize_t c = 0; c < nc; c++) {
        const int64_t *t = ch[c].ts.buf;
        Py_ssize_t found = 0;
        for (Py_ssize_t i = 0; i < ns; i++) {
            Py_ssize_t *b = bounds + 2 * (c * ns + i), lo, hi;
            sid_rows(&ch[c], sids[i], &lo, &hi);
            if (hi <= lo) continue;
            b[0] = bisect(t, lo, hi, start, 0);
            b[1] = bisect(t, b[0], hi, end, 1);
            cnt[i] += b[1] - b[0];
            found += b[1] - b[0];
        }
        if (found && account != Py_None) {
            PyObject *r = PyObject_CallFunction(account, "n", found);
            if (!r) goto done;
            Py_DECREF(r);
        }
        total += found;
    }
    ts_out = PyByteArray_FromStringAndSize(NULL, total * 8);
    val_out = PyByteArray_FromStringAndSize(NULL, total * 8);
    if (!ts_out || !val_out) goto done;
    char *tp = PyByteArray_AS_STRING(ts_out), *vp = PyByteArray_AS_STRING(val_out);
    for (Py_ssize_t i = 0; i < ns; i++) {
        for (Py_ssize_t c = 0; c < nc; c++) {
            Py_ssize_t *b = bounds + 2 * (c * ns + i), n = b[1] - b[0];
            if (n <= 0) continue;
            memcpy(tp, (const char *)ch[c].ts.buf + 8 * b[0], 8 * n);
            memcpy(vp, (const char *)ch[c].val.buf + 8 * b[0], 8 * n);
            tp += 8 * n;
            vp += 8 * n;
        }
    }
    res = PyTuple_Pack(3, counts, ts_out, val_out);
done:
    if (ch) release_chunks(ch, nc);
    PyMem_Free(ch);
    PyMem_Free(bounds);
    PyBuffer_Release(&sv);
    Py_XDECREF(counts);
    Py_XDECREF(ts_out);
    Py_XDECREF(val_out);
    return res;
}

/* Series offsets that never decrease and step times that never go back; -1 (ValueError) otherwise. */
static int check_grid(const int64_t *off, Py_ssize_t ns, const int64_t *times, Py_ssize_t nt, const char *what) {
    for (Py_ssize_t s = 0; s < ns; s++) {
        if (off[s + 1] < off[s]) {
            PyErr_Format(PyExc_ValueError, "%s: offsets decrease", what);
            return -1;
        }
    }
    for (Py_ssize_t t = 1; t < nt; t++) {
        if (times[t] < times[t - 1]) {
            PyErr_Format(PyExc_ValueError, "%s: times decrease", what);
            return -1;
        }
    }
    return 0;
}

#define STALE_NAN_BITS 0x7FF0000000000002ULL

static PyObject *instant_fill(PyObject *self, PyObject *args) {
    PyObject *off_o, *ts_o, *vals_o, *times_o, *ov_o, *op_o, *ot_o;
    long long lookback;
    if (!PyArg_ParseTuple(args, "OOOOLOOO:instant_fill", &off_o, &ts_o, &vals_o, &times_o, &lookback, &ov_o, &op_o,
                          &ot_o))
        return NULL;
    Py_buffer b[7];
    PyObject *objs[7] = {off_o, ts_o, vals_o, times_o, ov_o, op_o, ot_o};
    const char *codes[7] = {"ql", "ql", "d", "ql", "d", "?", "ql"};
    const char *names[7] = {"offsets", "ts", "vals", "times", "out_vals", "out_present", "out_ts"};
    if (get_buffers(objs, b, 7, 4, codes, names)) return NULL;
    const int64_t *off = b[0].buf, *ts = b[1].buf, *times = b[3].buf;
    const double *vals = b[2].buf;
    double *ov = b[4].buf;
    char *op = b[5].buf;
    int64_t *ot = b[6].buf;
    Py_ssize_t ns = b[0].len / 8 - 1, n = b[1].len / 8, nt = b[3].len / 8;
    if (ns < 0 || b[2].len != b[1].len || b[4].len / 8 != ns * nt || b[5].len != ns * nt || b[6].len / 8 != ns * nt
        || off[0] != 0 || off[ns] != n) {
        PyErr_SetString(PyExc_ValueError, "instant_fill: shapes do not match");
        goto done;
    }
    if (check_grid(off, ns, times, nt, "instant_fill")) goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < ns; s++) {
        Py_ssize_t j = off[s], end = off[s + 1];
        for (Py_ssize_t t = 0; t < nt; t++) {
            while (j < end && ts[j] <= times[t]) j++;
            Py_ssize_t idx = j - 1, cell = s * nt + t;
            int present = idx >= off[s];
            if (idx < 0) idx = 0;
            double v = n ? vals[idx] : 0.0;
            int64_t at = n ? ts[idx] : 0;
            uint64_t bits;
            memcpy(&bits, &v, 8);
            ov[cell] = v;
            ot[cell] = at;
            op[cell] = (char)(present && at > times[t] - lookback && bits != STALE_NAN_BITS);
        }
    }
    Py_END_ALLOW_THREADS
    return finish(b, (int)(sizeof(b) / sizeof(b[0])), 1);
done:
    return finish(b, (int)(sizeof(b) / sizeof(b[0])), 0);
}

static PyObject *window_fill(PyObject *self, PyObject *args) {
    PyObject *objs[5];
    long long range_ms;
    if (!PyArg_ParseTuple(args, "OOOLOO:window_fill", &objs[0], &objs[1], &objs[2], &range_ms, &objs[3], &objs[4]))
        return NULL;
    Py_buffer b[5];
    const char *codes[5] = {"ql", "ql", "ql", "ql", "ql"};
    const char *names[5] = {"offsets", "ts", "times", "out_lo", "out_hi"};
    if (get_buffers(objs, b, 5, 3, codes, names)) return NULL;
    const int64_t *off = b[0].buf, *ts = b[1].buf, *times = b[2].buf;
    int64_t *lo = b[3].buf, *hi = b[4].buf;
    Py_ssize_t ns = b[0].len / 8 - 1, n = b[1].len / 8, nt = b[2].len / 8;
    if (ns < 0 || b[3].len / 8 != ns * nt || b[4].len / 8 != ns * nt || off[0] != 0 || off[ns] != n) {
        PyErr_SetString(PyExc_ValueError, "window_fill: shapes do not match");
        goto done;
    }
    if (check_grid(off, ns, times, nt, "window_fill")) goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < ns; s++) {
        Py_ssize_t a = off[s], z = off[s], end = off[s + 1];
        for (Py_ssize_t t = 0; t < nt; t++) {
            int64_t upto = times[t], from = times[t] - range_ms;
            while (a < end && ts[a] <= from) a++;
            while (z < end && ts[z] <= upto) z++;
            lo[s * nt + t] = a;
            hi[s * nt + t] = z;
        }
    }
    Py_END_ALLOW_THREADS
    return finish(b, (int)(sizeof(b) / sizeof(b[0])), 1);
done:
    return finish(b, (int)(sizeof(b) / sizeof(b[0])), 0);
}

static double window_max_or_min(const double *x, int64_t n, int want_max) {
    double m = x[0];
    for (int64_t k = 1; k < n; k++) {
        if (want_max ? (x[k] > m || isnan(m)) : (x[k] < m || isnan(m))) m = x[k];
    }
    return m;
}

/* Prometheus' kahansum.Inc: the sum and compensation after adding inc. */
static inline void kahan_inc(double inc, double *sum, double *c) {
    double t = *sum + inc;
    if (isinf(t)) {
        *c = 0.0;
    } else if (fabs(*sum) >= fabs(inc)) {
        *c = ((*sum - t) + inc) + *c;
    } else {
        *c = ((inc - t) + *sum) + *c;
    }
    *sum = t;
}

static double window_avg(const double *x, int64_t n) {
    double sum = x[0], c = 0.0, mean = 0.0;
    int incremental = 0;
    for (int64_t k = 1; k < n; k++) {
        double count = (double)(k + 1);
        if (!incremental) {
            double s2 = sum, c2 = c;
            kahan_inc(x[k], &s2, &c2);
            if (!isinf(s2)) {
                sum = s2;
                c = c2;
                continue;
            }
            incremental = 1;
            mean = sum / (count - 1);
            c = c / (count - 1);
        }
        double q = (count - 1) / count;
        mean = q * mean;
        c = q * c;
        kahan_inc(x[k] / count, &mean, &c);
    }
    if (incremental) return mean + c;
    return sum / (double)n + c / (double)n;
}

static double window_total(const double *x, int64_t n) {
    double sum = 0.0, c = 0.0;
    for (int64_t k = 0; k < n; k++) kahan_inc(x[k], &sum, &c);
    return isinf(sum) ? sum : sum + c;
}

static double window_sum_or_avg(const double *x, int64_t n, int mean) {
    return mean ? window_avg(x, n) : window_total(x, n);
}

/* The widest window when every window first[i] .. first[i] + cnt[i] is within n values and not empty;
 * -1 (ValueError naming ``what``) otherwise. */
static int64_t check_windows(const int64_t *first, const int64_t *cnt, Py_ssize_t nw, Py_ssize_t n, const char *what) {
    int64_t widest = 1;
    for (Py_ssize_t i = 0; i < nw; i++) {
        if (first[i] < 0 || cnt[i] < 1 || first[i] + cnt[i] > n) {
            PyErr_Format(PyExc_ValueError, "%s: a window is outside the values", what);
            return -1;
        }
        if (cnt[i] > widest) widest = cnt[i];
    }
    return widest;
}

/* out[i] = fn(vals[first[i]:first[i] + counts[i]], flag) for every window (counts >= 1); fmt may omit the flag. */
static PyObject *per_window(PyObject *args, const char *fmt, double (*fn)(const double *, int64_t, int)) {
    PyObject *objs[4];
    int flag = 0;
    if (!PyArg_ParseTuple(args, fmt, &objs[0], &objs[1], &objs[2], &objs[3], &flag)) return NULL;
    Py_buffer b[4];
    const char *codes[4] = {"d", "ql", "ql", "d"};
    const char *names[4] = {"vals", "first", "counts", "out"};
    if (get_buffers(objs, b, 4, 3, codes, names)) return NULL;
    const double *v = b[0].buf;
    const int64_t *first = b[1].buf, *cnt = b[2].buf;
    double *out = b[3].buf;
    Py_ssize_t n = b[0].len / 8, nw = b[1].len / 8;
    if (b[2].len / 8 != nw || b[3].len / 8 != nw) {
        PyErr_SetString(PyExc_ValueError, "per-window function: shapes do not match");
        goto done;
    }
    if (check_windows(first, cnt, nw, n, "per-window function") < 0) goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nw; i++) out[i] = fn(v + first[i], cnt[i], flag);
    Py_END_ALLOW_THREADS
    return finish(b, 4, 1);
done:
    return finish(b, 4, 0);
}

static PyObject *window_extreme(PyObject *self, PyObject *args) {
    return per_window(args, "OOOOp:window_extreme", window_max_or_min);
}

static PyObject *window_sum(PyObject *self, PyObject *args) {
    return per_window(args, "OOOOp:window_sum", window_sum_or_avg);
}

static double window_variance_of(const double *x, int64_t n, int unused) {
    (void)unused;
    double mean = 0.0, c_mean = 0.0, aux = 0.0, c_aux = 0.0;
    for (int64_t k = 0; k < n; k++) {
        double d = x[k] - (mean + c_mean);
        kahan_inc(d / (double)(k + 1), &mean, &c_mean);
        kahan_inc(d * (x[k] - (mean + c_mean)), &aux, &c_aux);
    }
    return (aux + c_aux) / (double)n;
}

static PyObject *window_variance(PyObject *self, PyObject *args) {
    return per_window(args, "OOOO:window_variance", window_variance_of);
}

/* One window's regression, the same operations in the same order as the numpy columns. */
static void regress(const double *y, const int64_t *ts, int64_t n, int64_t icpt, double *slope, double *intercept) {
    double s[4] = {0.0, 0.0, 0.0, 0.0}, c[4] = {0.0, 0.0, 0.0, 0.0};
    int constant = 1;
    for (int64_t k = 0; k < n; k++) {
        /* NaN != NaN, so a NaN sample makes the series non-constant, as in Go. */
        if (k > 0 && y[k] != y[0]) constant = 0;
        double x = (double)(ts[k] - icpt) / 1e3;
        kahan_inc(x, &s[0], &c[0]);
        kahan_inc(y[k], &s[1], &c[1]);
        kahan_inc(x * y[k], &s[2], &c[2]);
        kahan_inc(x * x, &s[3], &c[3]);
    }
    if (constant) {
        *slope = isinf(y[0]) ? NAN : 0.0;
        *intercept = isinf(y[0]) ? NAN : y[0];
        return;
    }
    double count = (double)n, sx = s[0] + c[0], sy = s[1] + c[1], sxy = s[2] + c[2], sx2 = s[3] + c[3];
    double cov_xy = sxy - sx * sy / count;
    double var_x = sx2 - sx * sx / count;
    *slope = cov_xy / var_x;
    *intercept = sy / count - *slope * sx / count;
}

static PyObject *window_regression(PyObject *self, PyObject *args) {
    PyObject *objs[7];
    if (!PyArg_ParseTuple(args, "OOOOOOO:window_regression", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &objs[6]))
        return NULL;
    Py_buffer b[7];
    const char *codes[7] = {"d", "ql", "ql", "ql", "ql", "d", "d"};
    const char *names[7] = {"vals", "ts", "first", "counts", "intercept_ms", "out_slope", "out_intercept"};
    if (get_buffers(objs, b, 7, 5, codes, names)) return NULL;
    const double *v = b[0].buf;
    const int64_t *ts = b[1].buf, *first = b[2].buf, *cnt = b[3].buf, *icpt = b[4].buf;
    double *slope = b[5].buf, *intercept = b[6].buf;
    Py_ssize_t n = b[0].len / 8, nw = b[2].len / 8;
    if (b[1].len != b[0].len || b[3].len / 8 != nw || b[4].len / 8 != nw || b[5].len / 8 != nw
        || b[6].len / 8 != nw) {
        PyErr_SetString(PyExc_ValueError, "window_regression: shapes do not match");
        goto done;
    }
    if (check_windows(first, cnt, nw, n, "window_regression") < 0) goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nw; i++)
        regress(v + first[i], ts + first[i], cnt[i], icpt[i], &slope[i], &intercept[i]);
    Py_END_ALLOW_THREADS
    return finish(b, 7, 1);
done:
    return finish(b, 7, 0);
}

/* Ascending with -0 before +0: a total order on non-NaN doubles. */
static inline int before(double a, double b) { return a < b || (a == b && signbit(a) && !signbit(b)); }

static int cmp_doubles(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

/* Sorts the n non-NaN values of x into buf (ascending) and returns how many NaN x holds. */
static int64_t sorted_values(const double *x, int64_t n, double *buf) {
    int64_t m = 0;
    for (int64_t k = 0; k < n; k++) {
        if (!isnan(x[k])) buf[m++] = x[k];
    }
    if (m > 48) {
        qsort(buf, (size_t)m, sizeof(double), cmp_doubles);
    } else {
        for (int64_t i = 1; i < m; i++) {  /* windows are mostly a few dozen samples */
            double v = buf[i];
            int64_t j = i;
            for (; j > 0 && before(v, buf[j - 1]); j--) buf[j] = buf[j - 1];
            buf[j] = v;
        }
    }
    return n - m;
}

/* Element pos of the window in Prometheus' order: NaNs first, then the sorted values. */
static inline double pick(const double *sorted, int64_t n_nan, int64_t pos) {
    return pos < n_nan ? NAN : sorted[pos - n_nan];
}

static double window_quantile_of(const double *x, int64_t n, double q, double *buf) {
    if (isnan(q)) return NAN;
    if (q < 0) return -INFINITY;
    if (q > 1) return INFINITY;
    int64_t n_nan = sorted_values(x, n, buf);
    double count = (double)n, rank = q * (count - 1);
    double lower = fmax(0.0, floor(rank)), upper = fmin(count - 1, lower + 1), weight = rank - floor(rank);
    return pick(buf, n_nan, (int64_t)lower) * (1 - weight) + pick(buf, n_nan, (int64_t)upper) * weight;
}

static PyObject *window_quantile(PyObject *self, PyObject *args) {
    PyObject *objs[5];
    if (!PyArg_ParseTuple(args, "OOOOO:window_quantile", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4]))
        return NULL;
    Py_buffer b[5];
    const char *codes[5] = {"d", "ql", "ql", "d", "d"};
    const char *names[5] = {"vals", "first", "counts", "q", "out"};
    if (get_buffers(objs, b, 5, 4, codes, names)) return NULL;
    const double *v = b[0].buf, *q = b[3].buf;
    const int64_t *first = b[1].buf, *cnt = b[2].buf;
    double *out = b[4].buf, *buf = NULL;
    Py_ssize_t n = b[0].len / 8, nw = b[1].len / 8;
    if (b[2].len / 8 != nw || b[3].len / 8 != nw || b[4].len / 8 != nw) {
        PyErr_SetString(PyExc_ValueError, "window_quantile: shapes do not match");
        goto done;
    }
    int64_t widest = check_windows(first, cnt, nw, n, "window_quantile");
    if (widest < 0) goto done;
    buf = PyMem_Malloc((size_t)widest * sizeof(double));
    if (!buf) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nw; i++) out[i] = window_quantile_of(v + first[i], cnt[i], q[i], buf);
    Py_END_ALLOW_THREADS
    PyMem_Free(buf);
    return finish(b, 5, 1);
done:
    return finish(b, 5, 0);
}

static PyMethodDef methods[] = {
    {"gather", gather, METH_VARARGS, "A few series' samples in a time window from the head's chunks."},
    {"instant_fill", instant_fill, METH_VARARGS, "An instant selector's values at every step."},
    {"window_fill", window_fill, METH_VARARGS, "A range selector's window bounds at every step."},
    {"window_extreme", window_extreme, METH_VARARGS, "max_over_time or min_over_time of each window."},
    {"window_sum", window_sum, METH_VARARGS, "sum_over_time or avg_over_time of each window."},
    {"window_variance", window_variance, METH_VARARGS, "stdvar_over_time of each window."},
    {"window_regression", window_regression, METH_VARARGS, "deriv/predict_linear's regression of each window."},
    {"window_quantile", window_quantile, METH_VARARGS, "quantile_over_time of each window."},
    {"matrix_json", matrix_json, METH_VARARGS, "The JSON text of a matrix result's result array (bytes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_metricsc", NULL, -1, methods};

PyMODINIT_FUNC PyInit__metricsc(void) { return PyModule_Create(&module); }
