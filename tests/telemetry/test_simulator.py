"""The device simulator: believable, deterministic instruments that always speak the MQTT contract, and
their network life (last will, store-and-forward) proven against a real Mosquitto."""

from __future__ import annotations

import bisect
import itertools
import json
import os
import threading
import time
from collections import defaultdict

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from core.db import make_engine
from devices.registry import DeviceData, add_device, set_enabled
from migrations import runner
from telemetry.contract import MAX_BATCH, MAX_PAYLOAD_BYTES, Event, Metrics, Status, parse
from telemetry.simulator import (
    MODELS,
    DeviceSpec,
    Drop,
    FermenterModel,
    HplcModel,
    Publish,
    Reconnect,
    SemModel,
    Simulator,
    VirtualDevice,
    batches,
    encode,
    kind_for,
    make_model,
    parse_device_spec,
    parse_mqtt_url,
    parse_password_file,
    rfc3339,
    specs_from_registry,
)
from tests.factories import make_resource
from tests.services import free_port
from web.cli import main

START_MS = 1_795_570_200_000  # 2026-11-25T09:30:00+08:00
MINUTE = 60_000
DAY = 24 * 60 * MINUTE


def _topic(device_id: str, channel: str) -> str:
    return f"labshare/v1/{device_id}/{channel}"


def _parsed(device_id: str, messages) -> list:
    """Every message through the reference parser, as the ingest would see it (Invalid would raise)."""
    return [parse(_topic(device_id, channel), encode(payload), 0) for channel, payload in messages]


def _simulate(kind: str, days: float, seed: int = 1, **options) -> tuple[list, list]:
    # Sparser samples and heartbeats than the defaults keep long simulations quick; behaviour is the same.
    options.setdefault("sample_interval_s", 60)
    options.setdefault("heartbeat_s", 600)
    model = make_model(kind, f"{kind}-1", seed=seed, start_ms=START_MS, **options)
    messages = model.advance(START_MS + int(days * DAY))
    return messages, _parsed(model.device_id, messages)


def _runs(parsed) -> list[tuple[Event, Event]]:
    started = {m.run_id: m for m in parsed if isinstance(m, Event) and m.type == "run_started"}
    finished = {m.run_id: m for m in parsed if isinstance(m, Event) and m.type == "run_finished"}
    assert set(finished) <= set(started)
    return [(started[run_id], finished[run_id]) for run_id in started if run_id in finished]


def _state_at(parsed):
    """A function ts_ns -> the state the status messages announced last at or before that moment."""
    moments = [m.ts_ns for m in parsed if isinstance(m, Status)]
    states = [m.state for m in parsed if isinstance(m, Status)]

    def state(ts_ns: int) -> str:
        index = bisect.bisect_right(moments, ts_ns)
        return states[index - 1] if index else "idle"

    return state


def _samples(parsed) -> list:
    return [sample for m in parsed if isinstance(m, Metrics) for sample in m.samples]


# --- the behaviour models ------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 10**6), fault_rate=st.floats(0, 1),
       outages=st.floats(0, 48))
def test_every_message_of_every_model_and_outage_parses(kind, seed, fault_rate, outages):
    model = make_model(kind, "dev-1", seed=seed, start_ms=START_MS, fault_rate=fault_rate, sample_interval_s=30)
    device = VirtualDevice(model, seed=seed, outage_rate_per_day=outages, outage_s=(60, 7200))
    messages = [(action.channel, action.payload) for action in device.link_up(START_MS)]
    for hour in range(1, 24 + 1):
        for action in device.advance(START_MS + hour * 60 * MINUTE):
            if isinstance(action, Publish):
                messages.append((action.channel, action.payload))
            elif isinstance(action, Reconnect):
                messages += [(a.channel, a.payload) for a in device.link_up(device.model.now_ms)]
    for _channel, payload in messages:
        assert len(encode(payload)) <= MAX_PAYLOAD_BYTES
    parsed = _parsed("dev-1", messages)
    assert {type(m) for m in parsed} >= {Status, Metrics}
    ids = [m.event_id for m in parsed if isinstance(m, Event)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("kind", "days", "low_min", "high_min"), [
    ("sem", 20, 30, 180),
    ("hplc", 10, 10, 60),
    ("fermenter", 40, 24 * 60, 4 * 24 * 60),
    ("generic", 10, 20, 120),
])
def test_runs_have_realistic_lengths_and_idle_gaps_between_them(kind, days, low_min, high_min):
    _, parsed = _simulate(kind, days, fault_rate=0.0, sample_interval_s=600)
    runs = _runs(parsed)
    assert len(runs) >= 5
    for started, finished in runs:
        assert low_min * MINUTE <= (finished.ts_ns - started.ts_ns) // 10**6 <= high_min * MINUTE
    for (_, previous), (following, _) in itertools.pairwise(runs):
        assert following.ts_ns > previous.ts_ns  # an idle gap (or maintenance) before the next run
    run_ids = [started.run_id for started, _ in runs]
    assert len(run_ids) == len(set(run_ids))
    assert any(started.operator for started, _ in runs)
    assert any(not started.operator for started, _ in runs)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_power_agrees_with_the_status_so_a_power_threshold_sees_the_same_runs(kind):
    _, parsed = _simulate(kind, 12, fault_rate=0.2)
    threshold = MODELS[kind].power_threshold_w
    state = _state_at(parsed)
    samples = _samples(parsed)
    assert samples
    assert {state(s.ts_ns) for s in samples} >= {"idle", "running"}
    for sample in samples:
        assert (sample.values["power_w"] >= threshold) == (state(sample.ts_ns) == "running"), sample


def test_power_levels_of_each_kind():
    _, sem = _simulate("sem", 5)
    state = _state_at(sem)
    for sample in _samples(sem):
        if sample.values["beam_on"]:
            assert 1500 <= sample.values["power_w"] <= 2500
            assert state(sample.ts_ns) == "running"
        elif state(sample.ts_ns) == "idle":
            assert 300 <= sample.values["power_w"] <= 600
    _, hplc = _simulate("hplc", 3)
    state = _state_at(hplc)
    for sample in _samples(hplc):
        expected = (370, 430) if state(sample.ts_ns) == "running" else (130, 170)
        assert expected[0] <= sample.values["power_w"] <= expected[1]


def test_sem_pumps_down_before_the_beam_goes_on_and_vents_after_the_session():
    _, parsed = _simulate("sem", 3, fault_rate=0.0, sample_interval_s=10)
    samples = _samples(parsed)
    started, finished = _runs(parsed)[0]
    session = [s for s in samples if started.ts_ns <= s.ts_ns < finished.ts_ns]
    assert session[0].values["chamber_pressure_pa"] > 50_000  # starts at atmosphere
    first_beam = next(s for s in session if s.values["beam_on"])
    assert first_beam.values["chamber_pressure_pa"] < 1e-2
    assert not session[-1].values["beam_on"]  # beam off before the chamber is vented
    after = [s for s in samples if finished.ts_ns + 120 * 10**9 <= s.ts_ns < finished.ts_ns + 600 * 10**9]
    assert after
    assert all(s.values["chamber_pressure_pa"] > 50_000 and not s.values["beam_on"] for s in after)
    details = {m.detail for m in parsed if isinstance(m, Status) and m.state == "running"}
    assert "pumping down" in details
    assert any(detail.startswith("beam on") for detail in details)


def test_hplc_runs_report_samples_pressure_and_flow():
    _, parsed = _simulate("hplc", 3, fault_rate=0.0)
    state = _state_at(parsed)
    for started, finished in _runs(parsed):
        assert started.samples is not None
        assert started.samples >= 1
        assert finished.samples == started.samples
    running = [s for s in _samples(parsed) if state(s.ts_ns) == "running"]
    flowing = [s for s in running if s.values["flow_ml_min"] > 0.1]
    assert flowing
    assert all(10e5 < s.values["pressure_pa"] < 600e5 for s in flowing)  # 10–600 bar, in Pa


def test_fermenter_batches_last_days_at_their_temperature_and_ph():
    _, parsed = _simulate("fermenter", 40, fault_rate=0.0, sample_interval_s=600)
    runs = _runs(parsed)
    assert len(runs) >= 5
    state = _state_at(parsed)
    samples = _samples(parsed)
    stamps = [s.ts_ns for s in samples]
    for started, finished in runs:
        assert finished.ts_ns - started.ts_ns >= DAY * 10**6
        settled = samples[bisect.bisect_left(stamps, started.ts_ns + 3 * 3600 * 10**9):
                          bisect.bisect_left(stamps, finished.ts_ns)]
        temps = {round(s.values["temp_c"]) for s in settled}
        assert temps <= {29, 30, 31, 32, 33, 36, 37, 38}
        assert all(6.5 <= s.values["ph"] <= 7.2 and 0 <= s.values["do_pct"] <= 100 for s in settled)
        assert min(s.values["do_pct"] for s in settled) < 50  # growth consumes oxygen
        assert all(1000 <= s.values["power_w"] <= 3000 for s in settled if state(s.ts_ns) == "running")


def test_a_fault_raises_an_alarm_aborts_the_run_and_clears_later():
    _, parsed = _simulate("hplc", 2, fault_rate=1.0)
    events = [m for m in parsed if isinstance(m, Event)]
    alarms = [m for m in events if m.type == "alarm"]
    assert len(alarms) >= 3
    for alarm in alarms:
        at = [m for m in parsed if not isinstance(m, Metrics) and m.ts_ns == alarm.ts_ns]
        finished = next(m for m in at if isinstance(m, Event) and m.type == "run_finished")
        assert finished.detail == f"aborted: {alarm.detail}"
        assert any(isinstance(m, Status) and m.state == "fault" and m.detail == alarm.detail for m in at)
        later = [m for m in parsed if not isinstance(m, Metrics) and m.ts_ns > alarm.ts_ns]
        if not later or all(isinstance(m, Status) and m.state == "fault" for m in later):
            continue  # the simulation ended during this fault
        cleared = next(m for m in later if isinstance(m, Event))
        assert cleared.type == "alarm_cleared"
        assert next(m for m in later if isinstance(m, Status) and m.state != "fault").state == "idle"


def test_status_heartbeat_at_least_every_minute():
    _, parsed = _simulate("fermenter", 3, heartbeat_s=60)
    moments = [m.ts_ns for m in parsed if isinstance(m, Status)]
    assert max(b - a for a, b in itertools.pairwise(moments)) <= 60 * 10**9


def test_the_same_seed_replays_the_same_instrument_and_another_start_never_reuses_an_id():
    first = SemModel("sem-1", seed=7, start_ms=START_MS).advance(START_MS + DAY)
    again = SemModel("sem-1", seed=7, start_ms=START_MS).advance(START_MS + DAY)
    other = SemModel("sem-1", seed=8, start_ms=START_MS).advance(START_MS + DAY)
    assert first == again
    assert first != other
    restarted = SemModel("sem-1", seed=7, start_ms=START_MS + 1).advance(START_MS + DAY)
    ids = {p["id"] for c, p in first if c == "events"}
    assert ids
    assert ids.isdisjoint({p["id"] for c, p in restarted if c == "events"})


def test_stepping_in_small_or_large_steps_gives_the_same_messages():
    whole = HplcModel("h-1", seed=3, start_ms=START_MS).advance(START_MS + DAY)
    model = HplcModel("h-1", seed=3, start_ms=START_MS)
    pieces = []
    for step in range(1, 24 * 60 + 1):
        pieces += model.advance(START_MS + step * MINUTE)
    assert pieces == whole


def test_timestamps_are_rfc3339_with_offset_or_epoch_milliseconds():
    messages, _ = _simulate("generic", 1)
    for channel, payload in messages:
        if channel == "metrics":
            assert isinstance(payload["ts"], int)
        else:
            assert payload["ts"].endswith("+08:00")


# --- store-and-forward ------------------------------------------------------------------------------------

def test_an_outage_drops_buffers_and_forwards_a_batch_covering_it():
    model = SemModel("sem-1", seed=2, start_ms=START_MS, sample_interval_s=1)
    device = VirtualDevice(model, outage_rate_per_day=0)
    assert device.link_up(START_MS)
    assert all(isinstance(a, Publish) for a in device.advance(START_MS + 10 * MINUTE))
    device.force_outage(offline_s=3600)
    actions = device.advance(START_MS + 80 * MINUTE)
    assert isinstance(actions[0], Drop)
    assert [a for a in actions if isinstance(a, Reconnect)] == [Reconnect()]
    assert not [a for a in actions if isinstance(a, Publish)]  # nothing is sent while away
    flushed = device.link_up(START_MS + 80 * MINUTE)
    went, came = device.outages[-1]
    assert came == START_MS + 80 * MINUTE
    assert went is not None
    metrics = [a.payload for a in flushed if a.channel == "metrics"]
    assert len(metrics) >= 5  # 70 minutes of one-second samples do not fit in one batch
    entries = [entry for payload in metrics for entry in payload["batch"]]
    assert all(len(payload["batch"]) <= MAX_BATCH for payload in metrics)
    stamps = [entry["ts"] for entry in entries]
    assert stamps == sorted(stamps)
    assert stamps[0] <= went + 1000
    assert stamps[-1] >= came - 1000
    assert all(b - a == 1000 for a, b in itertools.pairwise(stamps))  # nothing lost
    # The will had no timestamp: the device says when it went, then what it is doing now.
    assert flushed[0] == Publish("status", {"ts": rfc3339(went), "state": "offline", "detail": "connection lost"})
    assert [a for a in flushed if a.channel == "status"][-1].payload["state"] != "offline"
    _parsed("sem-1", [(a.channel, a.payload) for a in flushed])


def test_an_unplanned_link_loss_is_bridged_by_store_and_forward_too():
    device = VirtualDevice(HplcModel("h-1", seed=1, start_ms=START_MS), outage_rate_per_day=0)
    device.link_up(START_MS)
    device.advance(START_MS + MINUTE)
    device.link_down(START_MS + MINUTE)
    assert device.advance(START_MS + 30 * MINUTE) == []
    flushed = device.link_up(START_MS + 30 * MINUTE)
    entries = [e for a in flushed if a.channel == "metrics" for e in a.payload["batch"]]
    assert len(entries) == 29 * 6


def test_batches_respect_the_entry_and_size_limits():
    small = [{"ts": START_MS + i, "values": {"power_w": 1.0}} for i in range(2500)]
    assert [len(b["batch"]) for b in batches(small)] == [1000, 1000, 500]
    wide = [{"ts": START_MS + i, "values": {f"field_{n}": 123456.789 for n in range(60)}} for i in range(300)]
    out = batches(wide)
    assert len(out) > 1
    assert sum(len(b["batch"]) for b in out) == 300
    for payload in out:
        body = encode(payload)
        assert len(body) <= MAX_PAYLOAD_BYTES
        parse(_topic("d-1", "metrics"), body, 0)


# --- specs and registry -----------------------------------------------------------------------------------

def test_device_specs_urls_and_password_files():
    assert parse_device_spec("sem-01:SEM:s3cret:with:colons") == DeviceSpec("sem-01", "sem", "s3cret:with:colons")
    assert parse_device_spec("h1:hplc") == DeviceSpec("h1", "hplc", None)
    for bad in ("sem-01", "bad id:sem", "x:toaster", ":sem"):
        with pytest.raises(ValueError, match="device"):
            parse_device_spec(bad)
    assert parse_mqtt_url("mqtt://127.0.0.1:1884").port == 1884
    assert parse_mqtt_url("mqtts://broker.example").port == 8883
    for bad in ("http://x:1883", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(ValueError, match=r"mqtt://|port"):
            parse_mqtt_url(bad)
    assert parse_password_file("# comment\n\nsem-1:pw:1\nh-1:x\n") == {"sem-1": "pw:1", "h-1": "x"}
    with pytest.raises(ValueError, match="line 1"):
        parse_password_file("no password here\n")


def test_kind_is_guessed_from_names():
    assert kind_for("Field-emission scanning electron microscope") == "sem"
    assert kind_for("SEM 3") == "sem"
    assert kind_for("Ultra-high-performance liquid chromatograph (UHPLC)") == "hplc"
    assert kind_for("500 L microbial fermentation pilot line") == "fermenter"
    assert kind_for("X-ray powder diffractometer", "", "seminar room") == "generic"


def test_specs_from_the_registry_take_enabled_devices_and_given_passwords(db):
    sem = make_resource(db)  # named "SEM n"
    hplc = make_resource(db, name_en="Liquid chromatograph", name_zh="液相色谱仪")
    add_device(db, None, DeviceData("reg-sem", sem.id, "status"))
    add_device(db, None, DeviceData("reg-hplc", hplc.id, "events"))
    off, _ = add_device(db, None, DeviceData("reg-off", sem.id, "status"))
    set_enabled(db, None, off.id, False)
    specs = {s.device_id: s for s in specs_from_registry(db, {"reg-sem": "pw"}) if s.device_id.startswith("reg-")}
    assert specs == {"reg-hplc": DeviceSpec("reg-hplc", "hplc", None), "reg-sem": DeviceSpec("reg-sem", "sem", "pw")}


# --- against a real Mosquitto ------------------------------------------------------------------------------

class Recorder:
    """Subscribes to everything below the prefix; MQTT 5 retain-as-published shows which were retained."""

    def __init__(self, broker, client_id: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            "labshare/v1/#", options=mqtt.SubscribeOptions(qos=1, retainAsPublished=True))
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.ready.wait(5)

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate, timeout_s: float = 20.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = predicate(self.snapshot())
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError("expected messages did not arrive")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _index_of_will(device_id: str):
    def find(messages):
        for index, (topic, payload, retain) in enumerate(messages):
            if topic == _topic(device_id, "status") and json.loads(payload) == {"state": "offline"} and retain:
                return index + 1  # 1-based so that the first message is truthy
        return None
    return find


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_simulator_publishes_drops_with_a_last_will_and_forwards_a_batch(mosquitto, protocol):
    sem, hplc, ferm = (f"it{protocol[0]}-{kind}" for kind in ("sem", "hplc", "ferm"))
    recorder = Recorder(mosquitto, f"recorder-{protocol[0]}")
    specs = [DeviceSpec(sem, "sem"), DeviceSpec(hplc, "hplc"), DeviceSpec(ferm, "fermenter")]
    simulator = Simulator(mosquitto.url, specs, time_scale=1800, seed=5, fault_rate=0.2, outage_rate_per_day=0,
                          protocol=protocol)
    simulator.start()
    try:
        recorder.wait_for(lambda ms: {t.rsplit("/", 1)[1] for t, _, _ in ms if hplc in t}
                          >= {"status", "metrics", "events"})
        recorder.wait_for(lambda ms: {t.split("/")[2] for t, _, _ in ms} >= {sem, hplc, ferm})
        simulator.force_outage(hplc, offline_s=1800)  # half a simulated hour: a second of real time
        will_at = recorder.wait_for(_index_of_will(hplc)) - 1

        def batch_after_will(messages):
            return next((json.loads(p)["batch"] for t, p, _ in messages[will_at:]
                         if t == _topic(hplc, "metrics") and b'"batch"' in p), None)

        batch = recorder.wait_for(batch_after_will)
        restored = recorder.wait_for(lambda ms: [json.loads(p) for t, p, _ in ms[will_at + 1:]
                                                 if t == _topic(hplc, "status")])
    finally:
        simulator.stop()
    went, came = simulator.devices[hplc].outages[-1]
    assert went is not None
    assert came is not None
    stamps = [entry["ts"] for entry in batch]
    interval = HplcModel.sample_interval_s * 1000
    assert stamps == sorted(stamps)
    assert stamps[0] <= went + interval
    assert stamps[-1] >= came - interval
    assert all(b - a == interval for a, b in itertools.pairwise(stamps))
    assert restored[-1]["state"] != "offline"

    # A clean stop leaves a retained "offline" with a reason; every message kept to the contract.
    late = Recorder(mosquitto, f"late-{protocol[0]}")
    final = late.wait_for(lambda ms: [json.loads(p) for t, p, retained in ms
                                      if t == _topic(sem, "status") and retained])
    late.close()
    recorder.close()
    assert final[-1]["state"] == "offline"
    assert final[-1]["detail"] == "simulator stopped"
    per_channel: dict[str, int] = defaultdict(int)
    for topic, payload, _ in recorder.snapshot():
        message = parse(topic, payload, time.time_ns())
        per_channel[type(message).__name__] += 1
    assert set(per_channel) == {"Status", "Metrics", "Event"}


def test_the_cli_runs_the_simulator_for_a_while(mosquitto):
    result = CliRunner().invoke(main, ["simulate", "--mqtt-url", mosquitto.url, "--device", "cli-1:hplc",
                                       "--devices", "2", "--time-scale", "600", "--duration", "1", "--quiet"],
                                env={"LABSHARE_MQTT_URL": None}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("stopped; sent status")


# --- the command line -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--device", "no-type-here"], "expected ID:TYPE[:PASSWORD]"),
    (["--device", "x:toaster"], "unknown device type 'toaster'"),
    (["--device", "bad id:sem"], "bad device id"),
    (["--device", "a:sem", "--mqtt-url", "http://127.0.0.1:1883"], "expected mqtt://host:port"),
    (["--device", "a:sem", "--mqtt-url", "mqtt://127.0.0.1:99999"], "bad port"),
    (["--device", "a:sem", "--device", "a:hplc"], "device ids must be unique"),
    ([], "no devices"),
    (["--device", "a:sem", "--time-scale", "0"], "time-scale"),
])
def test_cli_argument_errors_are_one_line_and_exit_non_zero(args, message):
    result = CliRunner().invoke(main, ["simulate", "--mqtt-url", "mqtt://127.0.0.1:1883", *args] if not any(
        a == "--mqtt-url" for a in args) else ["simulate", *args], env={"LABSHARE_MQTT_URL": None})
    assert result.exit_code != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_cli_reports_an_unreachable_broker_in_one_line():
    result = CliRunner().invoke(main, ["simulate", "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}",
                                       "--device", "a:sem"], env={"LABSHARE_MQTT_URL": None})
    assert result.exit_code != 0
    assert "cannot reach the MQTT broker" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_models_are_exposed_by_kind():
    assert MODELS["sem"] is SemModel
    assert MODELS["hplc"] is HplcModel
    assert MODELS["fermenter"] is FermenterModel
    with pytest.raises(ValueError, match="unknown device type"):
        make_model("toaster", "t-1")


def test_cli_from_registry_simulates_the_enabled_devices(mosquitto, tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(url)
    runner.upgrade(engine)
    with Session(engine) as session:
        resource = make_resource(session, name_en="Liquid chromatograph")
        _, secret = add_device(session, None, DeviceData("cli-reg-1", resource.id, "status"))
        off, _ = add_device(session, None, DeviceData("cli-reg-2", resource.id, "status"))
        set_enabled(session, None, off.id, False)
        session.commit()
    engine.dispose()
    passwords = tmp_path / "passwords"
    passwords.write_text(f"cli-reg-1:{secret}\n", encoding="utf-8")
    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("LABSHARE_")}
    env["LABSHARE_DATABASE_URL"] = url
    result = CliRunner().invoke(main, ["simulate", "--mqtt-url", mosquitto.url, "--from-registry", "--password-file",
                                       str(passwords), "--duration", "1", "--quiet"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "online 0/1;" in result.output  # one enabled device, cleanly stopped


def test_a_vanishing_outage_rate_means_no_outage_rather_than_a_crash():
    # hypothesis found it: expovariate(5e-324) is infinite, which no timestamp can hold
    model = HplcModel("h-tiny", seed=1, start_ms=START_MS)
    device = VirtualDevice(model, seed=1, outage_rate_per_day=5e-324, outage_s=(60, 7200))
    assert device._next_outage_ms is None
