"""The demo's dashboards (``*.yaml`` here), in the UI's dashboard format (``pitwall.ui.dashboards``).

``pitwall demo`` points ``ui.dashboards_dir`` at this folder; the demo's
alert annotations link to them by uid (the file name without ``.yaml``).
"""
