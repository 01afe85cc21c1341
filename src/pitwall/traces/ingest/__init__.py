"""Span ingest: OTLP/HTTP and Zipkin v2 decoders into the one span model."""
