"""Log intake: Loki push, OTLP logs, syslog, Elasticsearch bulk; all through ``LogIngester``."""
