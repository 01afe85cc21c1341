"""The web UI: server-rendered pages (Jinja2 + htmx + uPlot) over the pillars' query interfaces.

``pitwall.ui.routes.ui_router`` builds the router; this package's ``__init__``
imports nothing so that ``pitwall.config`` can import ``UISettings`` cheaply.
No other pillar imports the UI: its public interface is empty.
"""

__all__: list[str] = []
