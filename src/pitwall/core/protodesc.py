"""Protobuf messages declared in Python, for wire formats whose .proto pitwall does not vendor.

Remote write, Loki push and Zipkin's protobuf are small; declaring them with
descriptors at import time avoids generated code and keeps the exact field
numbers and types visible next to the code that reads them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["F", "Messages", "add_field"]

F = descriptor_pb2.FieldDescriptorProto


def add_field(msg: Any, name: str, number: int, ftype: int, label: int = F.LABEL_OPTIONAL,
              type_name: str = "") -> None:
    """Declare one field on a ``DescriptorProto`` (``type_name`` for messages: ``.pkg.Name``)."""
    f = msg.field.add()
    f.name, f.number, f.type, f.label = name, number, ftype, label
    if type_name:
        f.type_name = type_name


class Messages:
    """A private descriptor pool holding one declared file (and the files it depends on)."""

    def __init__(self, fd: descriptor_pb2.FileDescriptorProto, *deps: Any) -> None:
        """``deps`` are generated modules' file descriptors (e.g. ``timestamp_pb2.DESCRIPTOR``)."""
        self.package = fd.package
        self.pool = descriptor_pool.DescriptorPool()
        for dep in deps:
            proto = descriptor_pb2.FileDescriptorProto()
            dep.CopyToProto(proto)
            self.pool.Add(proto)
        self.pool.Add(fd)

    def cls(self, name: str) -> Any:
        """The message class of ``name`` (unqualified, in the file's package)."""
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(f"{self.package}.{name}"))
