/*
 * Fast decoder for Prometheus remote-write 1.0 WriteRequest bodies.
 *
 * One call walks the protobuf wire format and returns flat arrays, so the
 * Python side does per-series work only (a dict lookup by the raw label
 * bytes) and never builds per-sample or per-label objects.
 *
 * decode(buf) -> (spans, counts, ts, vals, flags) where
 *   spans  : bytes of int64 pairs (start, end) of each series' label fields
 *            in buf (labels must be contiguous, as every client writes them),
 *   counts : bytes of int64 samples per series,
 *   ts     : bytes of int64 sample timestamps,
 *   vals   : bytes of float64 sample values,
 *   flags  : bit 1 = request has metadata, bit 2 = some series has exemplars
 *            or histograms, bit 4 = labels not contiguous (caller falls back).
 * Raises ValueError on malformed input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} buf_t;

static int buf_put(buf_t *b, const void *p, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->len + n) nc *= 2;
        char *nd = PyMem_Realloc(b->data, nc);
        if (!nd) { PyErr_NoMemory(); return -1; }
        b->data = nd;
        b->cap = nc;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    while (*p < end && shift < 64) {
        uint8_t c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) { *out = v; return 0; }
        shift += 7;
    }
    return -1;
}

/* Skip a field of wire type wt; returns -1 on malformed input. */
static int skip(const uint8_t **p, const uint8_t *end, int wt) {
    uint64_t n;
    switch (wt) {
    case 0: return varint(p, end, &n);
    case 1: if (end - *p < 8) return -1; *p += 8; return 0;
    case 2: if (varint(p, end, &n) || (uint64_t)(end - *p) < n) return -1; *p += n; return 0;
    case 5: if (end - *p < 4) return -1; *p += 4; return 0;
    default: return -1;
    }
}

static int sample(const uint8_t *p, const uint8_t *end, buf_t *ts, buf_t *vals) {
    double v = 0.0;
    int64_t t = 0;
    while (p < end) {
        uint64_t key;
        if (varint(&p, end, &key)) return -1;
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if (field == 1 && wt == 1) {
            if (end - p < 8) return -1;
            memcpy(&v, p, 8);
            p += 8;
        } else if (field == 2 && wt == 0) {
            uint64_t u;
            if (varint(&p, end, &u)) return -1;
            t = (int64_t)u;
        } else if (skip(&p, end, wt)) {
            return -1;
        }
    }
    if (buf_put(ts, &t, 8) || buf_put(vals, &v, 8)) return -2;
    return 0;
}

static int series(const uint8_t *base, const uint8_t *p, const uint8_t *end, buf_t *spans,
                  buf_t *counts, buf_t *ts, buf_t *vals, int *flags) {
    int64_t lstart = -1, lend = -1, n = 0;
    int labels_done = 0;
    while (p < end) {
        const uint8_t *fstart = p;
        uint64_t key, len;
        if (varint(&p, end, &key)) return -1;
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if (wt != 2) { if (skip(&p, end, wt)) return -1; continue; }
        if (varint(&p, end, &len) || (uint64_t)(end - p) < len) return -1;
        if (field == 1) {
            if (lstart < 0) lstart = fstart - base;
            else if (labels_done || lend != fstart - base) *flags |= 4;
            lend = (p + len) - base;
        } else {
            if (lstart >= 0) labels_done = 1;
            if (field == 2) {
                int r = sample(p, p + len, ts, vals);
                if (r) return r;
                n++;
            } else if (field == 3 || field == 4) {
                *flags |= 2;
            }
        }
        p += len;
    }
    if (lstart < 0) lstart = lend = 0;
    if (buf_put(spans, &lstart, 8) || buf_put(spans, &lend, 8) || buf_put(counts, &n, 8)) return -2;
    return 0;
}

static PyObject *decode(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    const uint8_t *base = view.buf, *p = base, *end = base + view.len;
    buf_t spans = {0}, counts = {0}, ts = {0}, vals = {0};
    int flags = 0, err = 0;
    Py_BEGIN_ALLOW_THREADS
    while (p < end) {
        uint64_t key, len;
        if (varint(&p, end, &key)) { err = -1; break; }
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if (wt != 2) { if (skip(&p, end, wt)) { err = -1; break; } continue; }
        if (varint(&p, end, &len) || (uint64_t)(end - p) < len) { err = -1; break; }
        if (field == 1) {
            err = series(base, p, p + len, &spans, &counts, &ts, &vals, &flags);
            if (err) break;
        } else if (field == 3) {
            flags |= 1;
        }
        p += len;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *res = NULL;
    if (err == -2) {
        PyErr_NoMemory();
    } else if (err) {
        PyErr_SetString(PyExc_ValueError, "malformed protobuf WriteRequest");
    } else {
        res = Py_BuildValue("(y#y#y#y#i)", spans.data ? spans.data : "", spans.len,
                            counts.data ? counts.data : "", counts.len, ts.data ? ts.data : "", ts.len,
                            vals.data ? vals.data : "", vals.len, flags);
    }
    PyMem_Free(spans.data);
    PyMem_Free(counts.data);
    PyMem_Free(ts.data);
    PyMem_Free(vals.data);
    return res;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O, "Decode a remote-write WriteRequest into flat arrays."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rwdecode", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rwdecode(void) { return PyModule_Create(&module); }
