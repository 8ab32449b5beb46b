"""The audit trail: records of a real diagnosis session, the user header, time windows, CSV / JSON export."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from medfew.cli import main
from medfew.commands.audit import parse_utc
from medfew.diagnosis import DiagnosisSession
from medfew.errors import ConfigError
from medfew.store import (
    AuditContext,
    Store,
    adapt_record,
    audit_csv,
    diagnose_records,
    read_audit,
    support_fingerprint,
    user_from_headers,
    write_audit,
)


@pytest.mark.parametrize(("headers", "user"), [
    ({"X-Forwarded-User": "dr.amsel"}, "dr.amsel"),
    ({"x-remote-user": " nurse.b "}, "nurse.b"),
    ({"X-Forwarded-User": "", "Remote-User": "c"}, "c"),
    ({"X-Forwarded-User": "evil\x00\nname"}, "evilname"),
    ({"X-Forwarded-User": "x" * 500}, "x" * 200),
    ({"Host": "127.0.0.1"}, "local"),
    (None, "local"),
])
def test_user_comes_from_the_proxy_header_else_local(headers, user: str) -> None:
    assert user_from_headers(headers) == user


def session_predictions() -> tuple[DiagnosisSession, list]:
    """The default model adapted to two classes of synthetic scans, and the diagnoses of two queries."""
    rng = np.random.default_rng(3)
    session = DiagnosisSession("default")
    for label, level in (("bright", 0.8), ("dark", 0.2)):
        for _ in range(3):
            session.add_support(np.clip(level + 0.05 * rng.standard_normal((48, 48)), 0, 1).astype(np.float32), label)
    session.adapt()
    queries = [np.full((48, 48), 0.78, np.float32), np.full((48, 48), 0.25, np.float32)]
    return session, [session.diagnose(q, saliency=False) for q in queries]


def test_records_of_a_real_session_round_trip_through_the_database(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'audit.db'}")
    session, predictions = session_predictions()
    context = AuditContext(user="dr.amsel", model_sha256=session.info.weights_sha256,
                           support_sha256=support_fingerprint((s.label, s.sha256) for s in session.support),
                           support_counts=session.support_counts(), library_name="Synthetic", library_version=2)
    write_audit(store, [adapt_record(context)])
    write_audit(store, diagnose_records(context, predictions))
    records = read_audit(store)
    assert [r.action for r in records] == ["adapt", "diagnose", "diagnose"]
    assert [r.prediction for r in records[1:]] == [p.predicted for p in predictions] == ["bright", "dark"]
    assert [r.query_sha256 for r in records[1:]] == [p.image_sha256 for p in predictions]
    assert records[1].probabilities == pytest.approx(predictions[0].probabilities, abs=1e-6)
    assert records[1].uncertain == predictions[0].uncertain and records[1].out_of_distribution is not None
    assert records[1].prediction_set == list(predictions[0].prediction_set)
    assert all((r.user, r.library_name, r.library_version) == ("dr.amsel", "Synthetic", 2) for r in records)
    assert records[0].event_id != records[1].event_id == records[2].event_id
    assert support_fingerprint([("a", "1")]) != support_fingerprint([("b", "1")])

    rows = list(csv.DictReader(io.StringIO(audit_csv(records))))
    assert [r["action"] for r in rows] == ["adapt", "diagnose", "diagnose"]
    assert rows[0]["query_sha256"] == "" and rows[0]["time_utc"].endswith("Z")
    assert json.loads(rows[1]["probabilities"]) == pytest.approx(predictions[0].probabilities, abs=1e-6)
    assert json.loads(rows[2]["support_counts"]) == {"bright": 3, "dark": 3}

    later = records[0].time_utc + timedelta(hours=1)
    assert read_audit(store, since=later) == [] and len(read_audit(store, until=later)) == 3


def test_parse_utc_dates_and_times() -> None:
    assert parse_utc("2026-12-01", "--since") == datetime(2026, 12, 1)
    assert parse_utc("2026-12-01", "--until", end_of_day=True) == datetime(2026, 12, 2)
    assert parse_utc("2026-12-01T09:30+01:00", "--since") == datetime(2026, 12, 1, 8, 30)
    with pytest.raises(ConfigError, match="--since 'last week' is not a date"):
        parse_utc("last week", "--since")


def test_audit_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = Store(url)
    context = AuditContext(user="local", model_sha256="0" * 64, support_sha256="1" * 64, support_counts={"a": 2})
    write_audit(store, [adapt_record(context)])
    day = read_audit(store)[0].time_utc.date().isoformat()
    assert main(["audit", "export", "--since", day, "--json", "--db", url]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["action"] == "adapt" and record["support_counts"] == {"a": 2}
    assert main(["audit", "export", "--since", day, "--until", day, "--db", url]) == 0
    assert capsys.readouterr().out.count("\n") == 2  # header + one record
    assert main(["audit", "export", "--since", day, "--until", "2000-01-01", "--db", url]) == 2
    assert "--until '2000-01-01' is not after --since" in capsys.readouterr().err
