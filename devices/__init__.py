"""Device registry, live device state and measured usage sessions (built by the telemetry issue)."""
