"""Open-sharing report pages and dashboards (design.md §7): figures, their sources, downloads and charts."""
