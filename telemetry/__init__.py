"""MQTT contract, ingest worker, time-series stores and simulator (built by the telemetry issue)."""
