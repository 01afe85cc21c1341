"""Prometheus-compatible scraping: config, discovery, targets, loops, manager.

``config`` holds the strict ``scrape_configs`` models, ``discovery`` turns
static and file_sd groups into targets (``targets`` is Prometheus'
PopulateLabels and the status types), ``client`` the HTTP client and request
headers, ``loop`` one target's scrape loop, ``manager`` the ``ScrapeManager``
component. Import from the module that defines a name.
"""
