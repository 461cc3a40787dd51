"""Running ingest workers from the settings: one in this process, or several processes (`--workers N`)
that share one subscription. SIGTERM or SIGINT drains and stops them."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal
import threading
from dataclasses import replace
from pathlib import Path

from prometheus_client import start_http_server

from core.db import make_engine
from core.settings import Settings
from telemetry.ingest import IngestConfig, IngestWorker
from telemetry.metrics import IngestMetrics
from telemetry.spool import DiskSpool
from telemetry.tsdb import store_from_url

log = logging.getLogger(__name__)

# The ingest allocates a few container objects per message (parsed payloads, items, rows, tails), so CPython's
# collector runs its youngest generation every 700 allocations and, every hundred of those, a full collection
# that walks everything the process holds: the imported code, SQLAlchemy's metadata and compiled statements.
# That was a third of the processing thread's CPU time (bench/ingest.py). The objects present once the worker
# is built live as long as the process, so they are frozen out of collection, and young collections run less
# often (the work between them is a few batches' garbage, which is small).
GC_THRESHOLDS = (50_000, 20, 20)


def tune_garbage_collector() -> None:
    """Freeze what the process holds now and collect less often: call once the worker is built."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def ingest_config(settings: Settings, **overrides) -> IngestConfig:
    return IngestConfig(mqtt_url=settings.mqtt_url, protocol=int(settings.mqtt_protocol), **overrides)


def build_worker(settings: Settings, config: IngestConfig, spool_name: str,
                 metrics: IngestMetrics | None = None) -> IngestWorker:
    engine = make_engine(settings.effective_database_url)
    store = store_from_url(settings.tsdb_url, engine)
    # each worker owns its spool directory (a spool has one owner at a time)
    spool = DiskSpool(Path(settings.data_dir) / "spool" / spool_name, int(settings.spool_max_mb) * 1024 * 1024)
    return IngestWorker(config, engine, store, spool, metrics)


def run_one(settings: Settings, config: IngestConfig, metrics_port: int | None,
            stop: threading.Event | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT (or `stop`), then drain it."""
    metrics = IngestMetrics()
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    worker = build_worker(settings, config, config.client_id, metrics)
    tune_garbage_collector()
    stop = stop or threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker.start()
    log.info("ingest %s started: %s, batches of %d", config.client_id, config.topic_filter, config.batch_size)
    stop.wait()
    log.info("ingest %s draining", config.client_id)
    worker.stop()
    log.info("ingest %s stopped", config.client_id)


def _child(settings: Settings, config: IngestConfig, metrics_port: int | None) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(processName)s %(message)s")
    run_one(settings, config, metrics_port)


def run_many(settings: Settings, config: IngestConfig, workers: int, metrics_port: int | None) -> None:
    """`workers` processes, client ids `<id>-1` … `<id>-N`, metrics on consecutive ports."""
    if workers == 1:
        run_one(settings, replace(config, client_id=f"{config.client_id}-1"), metrics_port)
        return
    context = multiprocessing.get_context("spawn")
    processes = []
    for n in range(1, workers + 1):
        child_config = replace(config, client_id=f"{config.client_id}-{n}")
        port = metrics_port + n - 1 if metrics_port else None
        process = context.Process(target=_child, args=(settings, child_config, port), name=f"ingest-{n}")
        process.start()
        processes.append(process)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not all(p.is_alive() for p in processes):
            log.error("an ingest process exited; stopping the others")
            break
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: each drains
    for process in processes:
        process.join(60)
