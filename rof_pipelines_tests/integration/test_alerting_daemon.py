"""Alerting with the real dagster-daemon: a run made to fail gives exactly one notification per
channel (webhook, Slack format, e-mail) within two evaluation intervals; the next good run one
"resolved"; a second failure within the cooldown nothing. Then the daemon SIGKILLed while a
notification is in flight: after the restart it is delivered once, with the same idempotency key."""

import time
from collections.abc import Iterator
from typing import Any

import pytest

from rof_pipelines.bench.sensor import DaemonHarness, wait_for
from rof_pipelines_tests.alert_receivers import HttpReceiver, SmtpReceiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]

INTERVAL_S = 5  # the sensor daemon's own loop checks sensors about every 5 s


def _alerting(webhook: HttpReceiver, smtp: SmtpReceiver, backups: str) -> dict[str, Any]:
    return {
        "system_setup": {"backup": {"directory": backups}},
        "alerting": {
            "evaluation_interval": f"{INTERVAL_S}s",
            "cooldown": "10m",
            "retry": {"initial": "1s", "maximum": "5s"},
            "channels": {
                "hook": {"type": "webhook", "url": webhook.url + "/hook", "timeout": "3s"},
                "slack": {"type": "slack", "url": webhook.url + "/slack", "timeout": "3s"},
                "mail": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "sender": "rof@example.test",
                    "recipients": ["oncall@example.test"],
                },
            },
            "routes": [{"channels": ["hook", "slack", "mail"], "rules": ["run_failed"]}],
        },
    }


@pytest.fixture
def receivers() -> Iterator[tuple[HttpReceiver, SmtpReceiver]]:
    with HttpReceiver() as webhook, SmtpReceiver() as smtp:
        yield webhook, smtp


@pytest.fixture
def harness(pg_admin_dsn, rabbitmq_url, receivers, tmp_path, monkeypatch):
    webhook, smtp = receivers
    harness = DaemonHarness(
        sensor_interval=30, config_overrides=_alerting(webhook, smtp, str(tmp_path / "backups"))
    )
    monkeypatch.setenv("ROF_CONFIG", str(harness.config_path))
    monkeypatch.setenv("DAGSTER_HOME", str(harness.home))
    try:
        yield harness
    finally:
        harness.close()


def _backup(harness: DaemonHarness, destination: str | None) -> tuple[bool, float]:
    """Run the state_backup job in this process, on the daemon's instance; a destination that is not
    configured makes it fail. Returns success and the end time."""
    from dagster import DagsterInstance

    from rof_pipelines.definitions import defs

    run_config = {"ops": {"backup_state_store": {"config": {"destination": destination}}}}
    instance = DagsterInstance.from_config(str(harness.home))
    try:
        result = (
            defs()
            .get_job_def("state_backup")
            .execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
        )
    finally:
        instance.dispose()
    return result.success, time.monotonic()


def _alert_ticks(harness: DaemonHarness) -> int:
    from dagster import DagsterInstance
    from dagster._core.scheduler.instigation import InstigatorType

    instance = DagsterInstance.from_config(str(harness.home))
    try:
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == "alerts_sensor":
                return len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50))
        return 0
    finally:
        instance.dispose()


def _started(harness: DaemonHarness) -> None:
    harness.start()
    before = _alert_ticks(harness)
    assert wait_for(lambda: _alert_ticks(harness) >= before + 2, timeout=180), (
        f"alerts_sensor never ticked; see {harness.dir / 'daemon.log'}"
    )


def _bodies(webhook: HttpReceiver, path: str) -> list[dict[str, Any]]:
    return [r.json for r in webhook.delivered if r.path == path]


def test_a_failed_run_notifies_once_per_channel_resolves_once_and_respects_the_cooldown(harness, receivers):
    webhook, smtp = receivers
    _started(harness)
    ok, ended = _backup(harness, "nowhere")
    assert not ok
    assert wait_for(lambda: len(webhook.delivered) >= 2 and len(smtp.messages) >= 1, timeout=60)
    latency = time.monotonic() - ended
    print(f"first notification {latency:.1f}s after the failed run ended")
    time.sleep(2 * INTERVAL_S + 1)  # more ticks: nothing more may arrive
    hooks, slacks = _bodies(webhook, "/hook"), _bodies(webhook, "/slack")
    assert len(hooks) == 1 and len(slacks) == 1 and len(smtp.messages) == 1, (hooks, slacks, smtp.messages)
    assert latency <= 2 * INTERVAL_S + 2, f"first notification {latency:.1f}s after the run ended"
    fired = hooks[0]
    assert fired["event"] == "firing" and fired["rule"] == "run_failed"
    assert fired["labels"]["job"] == "state_backup" and fired["severity"] == "critical"
    assert "no destination named 'nowhere'" in fired["summary"]
    assert "[FIRING]" in slacks[0]["text"] and "run_failed" in slacks[0]["text"]
    mail = smtp.messages[0]
    assert "FIRING" in mail["Subject"] and mail["To"] == "oncall@example.test"
    assert mail["Message-ID"].startswith("<")

    ok, _ = _backup(harness, None)  # the default destination: the run succeeds, the alert resolves
    assert ok
    assert wait_for(lambda: len(_bodies(webhook, "/hook")) >= 2, timeout=60)
    time.sleep(2 * INTERVAL_S + 1)
    events = [body["event"] for body in _bodies(webhook, "/hook")]
    assert events == ["firing", "resolved"]
    slack_texts = [b["text"] for b in _bodies(webhook, "/slack")]
    assert len(slack_texts) == 2 and "[RESOLVED]" in slack_texts[1], slack_texts
    assert len(smtp.messages) == 2 and "RESOLVED" in smtp.messages[1]["Subject"]

    ok, _ = _backup(harness, "nowhere")  # fails again within the 10 min cooldown: no notification
    assert not ok
    time.sleep(3 * INTERVAL_S + 2)
    assert [b["event"] for b in _bodies(webhook, "/hook")] == ["firing", "resolved"]
    assert len(smtp.messages) == 2
    with harness_store(harness) as store:
        firing = [s for s in store.alerts.states() if s.rule == "run_failed"]
    assert [(s.status, s.notified) for s in firing] == [("firing", False)]  # fired, silently


def test_a_daemon_killed_while_a_notification_is_in_flight_delivers_it_once_after_restart(harness, receivers):
    webhook, _smtp = receivers
    _started(harness)
    webhook.mode = "hang"  # the receiver holds the request: the daemon is mid-delivery
    ok, _ = _backup(harness, "nowhere")
    assert not ok
    assert wait_for(lambda: len(webhook.abandoned) >= 1, timeout=60), "no delivery was attempted"
    harness.kill()  # SIGKILL, between firing (committed) and delivery (unanswered)
    in_flight = webhook.abandoned[0].header("Idempotency-Key")
    webhook.mode = "ok"
    webhook.release()
    with harness_store(harness) as store:
        pending = [d for d in store.alerts.deliveries(status="pending") if d.channel == "hook"]
    assert len(pending) == 1, pending

    _started(harness)
    assert wait_for(lambda: len(_bodies(webhook, "/hook")) >= 1, timeout=90)
    time.sleep(3 * INTERVAL_S)
    delivered = [r for r in webhook.delivered if r.path == "/hook"]
    assert len(delivered) == 1, [r.json for r in delivered]
    assert delivered[0].header("Idempotency-Key") == in_flight  # the same delivery, not a second alert
    with harness_store(harness) as store:
        rows = [d for d in store.alerts.deliveries() if d.channel == "hook"]
    assert [(d.status, d.notice.event) for d in rows] == [("sent", "firing")]
    assert rows[0].attempts >= 2


def harness_store(harness: DaemonHarness) -> Any:
    from rof_pipelines.adapters.state_store import StateStore

    return StateStore(harness.settings.state_storage)
