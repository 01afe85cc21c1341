"""Properties: selectors never fail but with BadRequest; patches agree where their semantics agree."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pitwall.kube.errors import BadRequest
from pitwall.kube.patch import json_patch, merge_patch, strategic_merge
from pitwall.kube.selectors import LabelSelector

_keys = st.sampled_from(["a", "b", "c", "app", "tier"])
_scalars = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans())
_docs = st.recursive(_scalars, lambda inner: st.dictionaries(_keys, inner, max_size=4), max_leaves=12)
_patches = st.recursive(st.one_of(_scalars, st.none()), lambda inner: st.dictionaries(_keys, inner, max_size=4),
                        max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab=!,() innotx", max_size=20))
def test_label_selector_parses_or_says_bad_request(text: str) -> None:
    try:
        sel = LabelSelector.parse(text)
    except BadRequest:
        return
    sel.matches({"a": "b"})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _docs, max_size=4), st.dictionaries(_keys, _patches, max_size=4))
def test_strategic_merge_without_lists_is_a_merge_patch(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    assert strategic_merge(doc, patch, None) == merge_patch(doc, patch)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _docs, min_size=1, max_size=4), _docs)
def test_json_patch_replace_then_read(doc: dict[str, Any], value: Any) -> None:
    key = sorted(doc)[0]
    out = json_patch(doc, [{"op": "replace", "path": f"/{key}", "value": value},
                           {"op": "test", "path": f"/{key}", "value": value}])
    assert out[key] == value and {k: v for k, v in out.items() if k != key} == \
        {k: v for k, v in doc.items() if k != key}
