"""Open-sharing reports (design.md §7): figures computed from measured use and issued charges."""
