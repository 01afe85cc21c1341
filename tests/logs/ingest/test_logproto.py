"""pitwall's built-at-import logproto matches Loki's official push.proto on the wire."""

from __future__ import annotations

from types import ModuleType

from pitwall.logs.ingest import logproto


def _shape(desc: object) -> dict[str, tuple[int, int, int, str]]:
    out = {}
    for f in desc.fields:  # type: ignore[attr-defined]
        tname = f.message_type.full_name if f.message_type is not None else ""
        out[f.name] = (f.number, f.type, int(f.is_repeated), tname)
    return out


def test_every_message_matches_the_official_definition(official_logproto: ModuleType) -> None:
    for name in ("PushRequest", "PushResponse", "StreamAdapter", "LabelPairAdapter", "EntryAdapter"):
        ours = getattr(logproto, name).DESCRIPTOR
        theirs = getattr(official_logproto, name).DESCRIPTOR
        assert _shape(ours) == _shape(theirs), name


def test_bytes_from_the_official_classes_parse_with_ours(official_logproto: ModuleType) -> None:
    req = official_logproto.PushRequest()
    st = req.streams.add(labels='{app="api"}')
    e = st.entries.add(line="hello")
    e.timestamp.seconds, e.timestamp.nanos = 1_700_000_000, 5
    e.structuredMetadata.add(name="trace_id", value="abc")
    ours = logproto.PushRequest.FromString(req.SerializeToString())
    got = ours.streams[0].entries[0]
    assert (got.line, got.timestamp.seconds, got.timestamp.nanos) == ("hello", 1_700_000_000, 5)
    assert [(p.name, p.value) for p in got.structuredMetadata] == [("trace_id", "abc")]
