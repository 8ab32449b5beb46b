"""The audit trail: one record per Adapt and per diagnosed query scan, and its CSV export for the quality team.

A record holds the UTC time, the user (the reverse proxy's forwarded user, else ``"local"``), the
model's weights checksum, the case library and version the support set came from (if it did), a
sha256 of the support set, and for a query its pixel sha256, prediction, probabilities and flags.
Never a patient identifier or a file name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from sqlalchemy import select

from medfew.diagnosis import Prediction
from medfew.store.library import Store, clean_name, utc_now
from medfew.store.models import NAME_LENGTH, AuditRow

ACTIONS = ("adapt", "diagnose")
USER_HEADERS = ("X-Forwarded-User", "X-Remote-User", "Remote-User", "X-Auth-Request-User")
"""Headers a signing-in reverse proxy sets to the user's name (first present wins)."""


@dataclass(frozen=True)
class AuditContext:
    """What every record of one Adapt or Diagnose shares.

    Attributes:
        user: Who (forwarded user header, else ``"local"``).
        model_sha256: sha256 of the model's weights.
        support_sha256: :func:`support_fingerprint` of the support set.
        support_counts: Class -> number of support scans.
        library_name: Case library the support set was loaded from, unchanged since, else ``None``.
        library_version: Its version, else ``None``.
    """

    user: str
    model_sha256: str
    support_sha256: str
    support_counts: Mapping[str, int]
    library_name: str | None = None
    library_version: int | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One row of the audit trail (see the module docstring); query fields are ``None`` for an Adapt."""

    event_id: str
    time_utc: datetime
    user: str
    action: str
    model_sha256: str
    library_name: str | None
    library_version: int | None
    support_sha256: str
    support_counts: dict[str, int]
    query_sha256: str | None = None
    prediction: str | None = None
    probabilities: dict[str, float] | None = None
    uncertain: bool | None = None
    out_of_distribution: bool | None = None
    prediction_set: list[str] | None = None


def user_from_headers(headers: Mapping[str, str] | None) -> str:
    """The signed-in user from a reverse proxy's header (see :data:`USER_HEADERS`), else ``"local"``.

    Only meaningful behind a proxy that sets the header itself (and strips it from the browser's request).
    """
    lowered = {str(k).lower(): v for k, v in (headers or {}).items()}
    for name in USER_HEADERS:
        value = "".join(c for c in str(lowered.get(name.lower()) or "") if c.isprintable()).strip()
        if value:
            return value[:NAME_LENGTH]
    return "local"


def support_fingerprint(scans: Iterable[tuple[str, str]]) -> str:
    """sha256 of a support set's ``(label, pixel sha256)`` pairs, in order (the same set, the same value)."""
    digest = hashlib.sha256()
    for label, sha in scans:
        digest.update(json.dumps([label, sha]).encode())
    return digest.hexdigest()


def adapt_record(context: AuditContext) -> AuditRecord:
    """The record of one Adapt."""
    return AuditRecord(**_shared(context, "adapt", uuid.uuid4().hex))


def diagnose_records(context: AuditContext, predictions: Sequence[Prediction]) -> list[AuditRecord]:
    """One record per diagnosed query of one Diagnose (they share an ``event_id``)."""
    shared = _shared(context, "diagnose", uuid.uuid4().hex)
    return [AuditRecord(**shared, query_sha256=p.image_sha256, prediction=p.predicted,
                        probabilities={c: round(float(v), 6) for c, v in p.probabilities.items()},
                        uncertain=bool(p.uncertain),
                        out_of_distribution=None if p.out_of_distribution is None else bool(p.out_of_distribution),
                        prediction_set=None if p.prediction_set is None else list(p.prediction_set))
            for p in predictions]


def write_audit(store: Store, records: Sequence[AuditRecord]) -> None:
    """Append ``records`` to the audit trail (one transaction)."""
    with store.transaction() as session:
        session.add_all(AuditRow(**asdict(r)) for r in records)


def read_audit(store: Store, since: datetime | None = None, until: datetime | None = None) -> list[AuditRecord]:
    """Records with ``since <= time_utc < until`` (UTC, naive), oldest first."""
    query = select(AuditRow).order_by(AuditRow.time_utc, AuditRow.id)
    if since is not None:
        query = query.where(AuditRow.time_utc >= since)
    if until is not None:
        query = query.where(AuditRow.time_utc < until)
    names = [f.name for f in fields(AuditRecord)]
    with store.transaction() as session:
        return [AuditRecord(**{n: getattr(row, n) for n in names}) for row in session.scalars(query)]


def audit_csv(records: Iterable[AuditRecord]) -> str:
    """CSV text with a header row; JSON for the dictionaries and lists, ISO 8601 UTC for the time."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(AuditRecord)], lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = asdict(record)
        row["time_utc"] = record.time_utc.isoformat() + "Z"
        for key in ("support_counts", "probabilities", "prediction_set"):
            row[key] = "" if row[key] is None else json.dumps(row[key])
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def _shared(context: AuditContext, action: str, event_id: str) -> dict[str, object]:
    return {"event_id": event_id, "time_utc": utc_now(), "user": clean_name(context.user, "user name"),
            "action": action, "model_sha256": context.model_sha256, "library_name": context.library_name,
            "library_version": context.library_version, "support_sha256": context.support_sha256,
            "support_counts": dict(context.support_counts)}
