"""pitwall: production support for microservices in one Python process."""

__version__ = "0.1.0"
