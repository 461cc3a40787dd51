"""The live board in headless Chromium, end to end: a device publishes its status to a real Mosquitto, a real
IngestWorker writes it into the web app's database, and the board the lab manager has open changes the device's
state cell without a reload (htmx polls the table every second)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.accounts.models import User
from core.db import make_engine
from core.timeutil import utcnow
from devices.models import Device
from telemetry.ingest import IngestConfig, IngestWorker
from telemetry.spool import DiskSpool
from telemetry.tsdb import SqlStore
from tests.browser.conftest import DEMO_PASSWORD, serving, sign_in
from tests.factories import make_reservation

pytestmark = pytest.mark.browser

MANAGER = "manager@labshare.demo"  # manages the Chengdu island (eco_island)
DEVICE = "eco-tem-1"  # a status-measured device there
BOOKER = "researcher@labshare.demo"
# Chinese once /work/pending-i18n/live_pages.tsv is in the catalog; English until then
IDLE, RUNNING, SECONDS_AGO = re.compile("空闲|Idle"), re.compile("运行中|Running"), re.compile("秒前|s ago")


@dataclass
class LiveLab:
    url: str
    engine: Engine
    worker: IngestWorker


@pytest.fixture(scope="module")
def live_lab(tmp_path_factory: pytest.TempPathFactory, mosquitto) -> Iterator[LiveLab]:
    """Its own live server over a fresh demo database, and an ingest worker writing into that database."""
    from web.demo.seed import seed_demo

    def fill(session: Session) -> None:
        seed_demo(session)
        # someone is booked on the device's instrument right now
        device = session.scalar(select(Device).where(Device.device_id == DEVICE))
        booker = session.scalar(select(User).where(User.email == BOOKER))
        now = utcnow()
        make_reservation(session, resource=device.resource, user=booker, starts_at=now - timedelta(minutes=30),
                         ends_at=now + timedelta(minutes=90))

    directory = tmp_path_factory.mktemp("live-board")
    with serving(directory, fill) as (url, _nothing):
        engine = make_engine(f"sqlite:///{directory / 'labshare.db'}")
        worker = IngestWorker(IngestConfig(mqtt_url=mosquitto.url, client_id="live-board-browser-test",
                                           shared=False, batch_wait_s=0.05),
                              engine, SqlStore(engine), DiskSpool(directory / "spool", 16 * 1024 * 1024))
        worker.start()
        try:
            assert worker.wait_connected(15), "the ingest did not connect to Mosquitto"
            yield LiveLab(url, engine, worker)
        finally:
            worker.stop(timeout=10)
            engine.dispose()


def publish_status(broker_url: str, device_id: str, payload: dict) -> None:
    """Publish as the device would: QoS 1 on its status topic, waiting for the broker's acknowledgement."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{device_id}-test-publisher",
                         protocol=mqtt.MQTTv5)
    client.connect(host, int(port))
    client.loop_start()
    try:
        client.publish(f"labshare/v1/{device_id}/status", json.dumps(payload), qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_board_shows_a_published_state_within_the_polling_interval(page: Page, live_lab: LiveLab, mosquitto,
                                                                     screenshot) -> None:
    with Session(live_lab.engine) as session:
        booker_name = session.scalar(select(User.name_zh).where(User.email == BOOKER))
    publish_status(mosquitto.url, DEVICE, {"state": "idle"})
    sign_in(page, live_lab.url, MANAGER, DEMO_PASSWORD)
    page.goto(f"{live_lab.url}/manage/live")

    row = page.locator(f'[data-testid=live-row][data-device-id="{DEVICE}"]')
    expect(row).to_have_attribute("data-state", "idle", timeout=5000)
    expect(row.get_by_test_id("state-cell")).to_contain_text(IDLE)
    expect(row.get_by_test_id("booking-cell")).to_contain_text(booker_name)
    expect(page.locator(".ls-navbar a.active[href='/manage/live']")).to_be_visible()
    screenshot("idle")

    publish_status(mosquitto.url, DEVICE, {"state": "running", "detail": "样品台 3 号位"})

    # Polling swaps the table in place: the same document, no navigation, the new state within ~1 s.
    page.evaluate("window.__sameDocument = true")
    expect(row).to_have_attribute("data-state", "running", timeout=5000)
    expect(row.get_by_test_id("state-cell")).to_contain_text(RUNNING)
    expect(row.get_by_test_id("state-cell").locator(".badge.text-bg-success")).to_be_visible()
    expect(row.get_by_test_id("last-message")).to_contain_text(SECONDS_AGO)
    assert page.evaluate("window.__sameDocument") is True
    expect(page.get_by_test_id("count-running")).not_to_have_attribute("data-count", "0")
    screenshot()

    row.locator("a").first.click()
    expect(page.get_by_test_id("device-state")).to_contain_text(RUNNING)
    expect(page.get_by_test_id("timeline").locator(".ls-chart svg")).to_be_visible()
    screenshot("device")

    # A message that breaks the contract lands in the dead letters, explained.
    publish_status(mosquitto.url, DEVICE, {"state": "exploded"})
    rejected = page.locator('[data-testid=dead-letter-row][data-reason="bad_state"]')
    deadline = time.monotonic() + 5
    while True:
        page.goto(f"{live_lab.url}/manage/dead-letters")
        if rejected.count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(300)
    expect(rejected.first).to_contain_text("exploded")
    expect(page.get_by_test_id("dead-letter-counts").locator(".ls-chart svg")).to_be_visible()
    screenshot("dead-letters")
