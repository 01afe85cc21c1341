"""TraceQL's common subset for Tempo's search API: ``parse`` a query, ``evaluate`` it over one trace.

``candidate_filters`` gives the store filters that narrow the traces to read
first (see ``eval``); anything outside the subset is a ``TraceQLError`` (400).
"""

from pitwall.traces.traceql.eval import candidate_filters, evaluate, referenced_attributes
from pitwall.traces.traceql.parser import TraceQLError, parse

__all__ = ["TraceQLError", "candidate_filters", "evaluate", "parse", "referenced_attributes"]
