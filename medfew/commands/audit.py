"""``medfew audit export``: the app's audit trail for the quality team, as CSV (or JSON).

    medfew audit export --since 2026-12-01 [--until 2026-12-31] [--csv | --json] [--out FILE] [--db URL]

Dates are UTC: ``YYYY-MM-DD`` (``--until`` then includes that whole day) or an ISO time
(``2026-12-01T08:00``, ``...+01:00`` converted to UTC). One row per Adapt and per diagnosed scan.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from medfew.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``audit export`` to ``medfew``'s parser."""
    audit = commands.add_parser("audit", help="export the audit trail of Adapt and Diagnose")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    p = sub.add_parser("export", help="audit records between two UTC dates, as CSV (default) or JSON")
    p.add_argument("--since", required=True, help="first UTC date or time (YYYY-MM-DD or ISO 8601)")
    p.add_argument("--until", default=None, help="last UTC date (whole day) or time, exclusive (default: now)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--csv", action="store_true", help="CSV with a header row (the default)")
    kind.add_argument("--json", action="store_true", help="one JSON array")
    p.add_argument("--out", type=Path, default=None, help="write to this file (default: standard output)")
    p.add_argument("--db", default=None, help="SQLAlchemy database URL (default: $MEDFEW_DB_URL, else "
                                              "~/.local/share/medfew/medfew.db)")
    p.set_defaults(func=_cmd_export)


def parse_utc(text: str, option: str, *, end_of_day: bool = False) -> datetime:
    """``YYYY-MM-DD`` or an ISO 8601 time -> naive UTC ``datetime``; a bare date as ``--until`` -> next midnight.

    Raises:
        ConfigError: Not a date or time.
    """
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            return datetime.combine(day + timedelta(days=1 if end_of_day else 0), datetime.min.time())
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{option} {text[:40]!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _cmd_export(args: argparse.Namespace) -> int:
    from medfew.data.atomic import atomic_write_bytes
    from medfew.store import Store, audit_csv, read_audit

    since = parse_utc(args.since, "--since")
    until = parse_utc(args.until, "--until", end_of_day=True) if args.until else None
    if until is not None and until <= since:
        raise ConfigError(f"--until {args.until!r} is not after --since {args.since!r}")
    records = read_audit(Store(args.db), since, until)
    if args.json:
        text = json.dumps([{**asdict(r), "time_utc": r.time_utc.isoformat() + "Z"} for r in records], indent=2,
                          ensure_ascii=False) + "\n"
    else:
        text = audit_csv(records)
    if args.out is None:
        print(text, end="")
    else:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"{args.out}: {len(records)} audit records")
    return 0
