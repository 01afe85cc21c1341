"""The metrics store's write-ahead-log records: one codec per record type.

Contract: a samples record (``REC_SAMPLES``) carries one tenant, the series it
registers (dense ids, label sets) and flat int64 sids, int64 timestamps and
float64 values; ``decode_samples(encode_samples(...))`` gives them back
(arrays read in place from the payload, read-only). Metadata and exemplar
records are JSON. Label sets are stored as JSON pairs (``encode_labels``),
also in the ``metrics_series`` table. No I/O; the format is on disk: change
it only with a new record type.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from pitwall.core.labels import Labels

__all__ = [
    "REC_EXEMPLARS",
    "REC_METADATA",
    "REC_SAMPLES",
    "as_labels",
    "decode_labels",
    "decode_samples",
    "encode_labels",
    "encode_samples",
]

REC_SAMPLES = 1
REC_METADATA = 2
REC_EXEMPLARS = 3


def encode_labels(labels: Labels) -> bytes:
    return json.dumps(labels, separators=(",", ":")).encode()


def decode_labels(raw: str | bytes) -> Labels:
    return tuple((k, v) for k, v in json.loads(raw))


def as_labels(raw: list[list[str]]) -> Labels:
    return tuple((k, v) for k, v in raw)


_HDR = struct.Struct("<HII")


def encode_samples(
    tenant: str, new: list[tuple[int, Labels]], s: np.ndarray, t: np.ndarray, v: np.ndarray
) -> bytes:
    tb = tenant.encode()
    series = json.dumps([[sid, lbl] for sid, lbl in new], separators=(",", ":")).encode() if new else b""
    return b"".join([
        _HDR.pack(len(tb), len(series), len(s)),
        tb,
        series,
        s.astype(np.int64, copy=False).tobytes(),
        t.astype(np.int64, copy=False).tobytes(),
        v.astype(np.float64, copy=False).tobytes(),
    ])


def decode_samples(
    payload: bytes,
) -> tuple[str, list[tuple[int, Labels]], np.ndarray, np.ndarray, np.ndarray]:
    tl, sl, n = _HDR.unpack_from(payload, 0)
    pos = _HDR.size
    tenant = payload[pos : pos + tl].decode()
    pos += tl
    new: list[tuple[int, Labels]] = []
    if sl:
        new = [(int(sid), as_labels(lbl)) for sid, lbl in json.loads(payload[pos : pos + sl])]
    pos += sl
    s = np.frombuffer(payload, dtype=np.int64, count=n, offset=pos)
    pos += 8 * n
    t = np.frombuffer(payload, dtype=np.int64, count=n, offset=pos)
    pos += 8 * n
    v = np.frombuffer(payload, dtype=np.float64, count=n, offset=pos)
    return tenant, new, s, t, v
