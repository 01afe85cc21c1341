"""YAML as GitLab reads ``.gitlab-ci.yml``: anchors and merge keys, the ``!reference`` tag, and the file and
line of every mapping key kept, so lint errors name where the keyword is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["LineDict", "Reference", "SpecError", "load_yaml"]

MAX_YAML_BYTES = 1 << 20  # GitLab's default max_yaml_size_bytes is 2 MiB; one file of ours stays below 1 MiB


class SpecError(Exception):
    """A pipeline definition GitLab's lint would reject: names the file, line and keyword when known."""

    def __init__(self, message: str, file: str = "", line: int = 0) -> None:
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(where + message)
        self.message = message
        self.file = file
        self.line = line


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its keys were written."""

    file: str = ""
    line: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines: dict[Any, int] = {}

    def where(self, key: Any) -> tuple[str, int]:
        """The file and line of ``key`` (of the mapping when the key came from elsewhere)."""
        return self.file, self.lines.get(key, self.line)

    def copy_meta(self, other: LineDict) -> LineDict:
        self.file, self.line = other.file, other.line
        self.lines.update(other.lines)
        return self


@dataclass(frozen=True)
class Reference:
    """``!reference [job, key, ...]``: resolved after includes are merged."""

    path: tuple[str, ...]
    file: str
    line: int


def _loader(file: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
        loader.flatten_mapping(node)  # merge keys (<<: *anchor) as YAML 1.1 defines them
        out = LineDict()
        out.file, out.line = file, node.start_mark.line + 1
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            try:
                hash(key)
            except TypeError:
                raise SpecError("mapping key is not a scalar", file, knode.start_mark.line + 1) from None
            out[key] = loader.construct_object(vnode, deep=True)
            out.lines[key] = knode.start_mark.line + 1
        return out

    def reference(loader: yaml.SafeLoader, node: yaml.Node) -> Reference:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.SequenceNode):
            raise SpecError("!reference takes a sequence of keys", file, line)
        parts = loader.construct_sequence(node, deep=True)
        if not parts or not all(isinstance(p, str) for p in parts):
            raise SpecError("!reference takes a non-empty sequence of strings", file, line)
        return Reference(tuple(parts), file, line)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor("!reference", reference)
    return Loader


def load_yaml(text: str, file: str) -> LineDict:
    """Parse one CI file; its top level must be a mapping."""
    if len(text.encode()) > MAX_YAML_BYTES:
        raise SpecError(f"file is larger than {MAX_YAML_BYTES} bytes", file)
    try:
        doc = yaml.load(text, Loader=_loader(file))
    except SpecError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise SpecError(f"invalid YAML: {e.problem or e}", file, mark.line + 1 if mark else 0) from None
    except yaml.YAMLError as e:
        raise SpecError(f"invalid YAML: {e}", file) from None
    if doc is None:
        raise SpecError("Please provide content of .gitlab-ci.yml", file)
    if not isinstance(doc, LineDict):
        raise SpecError("root config should be a hash", file, 1)
    return doc
