"""``medfew pacs``: search the PACS, pull a series, diagnose a series and store the report back (DICOMweb).

    medfew pacs search [--patient-id ID] [--accession ACC] [--study-date DATE|FROM..TO] [--modality CR] [--json]
    medfew pacs pull --series UID --out DIR [--label CLASS]
    medfew pacs diagnose --support DIR --series UID [--checkpoint default|PATH] [--store-report] [--note TEXT]
    medfew pacs store FILE...

The server and its login come from ``MEDFEW_PACS_URL`` / ``MEDFEW_PACS_USER`` / ``MEDFEW_PACS_PASSWORD``
(or ``MEDFEW_PACS_TOKEN``), or the settings file named by ``MEDFEW_PACS_SETTINGS`` (see
:mod:`medfew.pacs.settings`); never from the command line, so they stay out of shell histories.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medfew.pacs import PacsClient


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``pacs search|pull|diagnose|store`` to the ``medfew`` command line."""
    from medfew.cli import alpha_level

    pacs = commands.add_parser("pacs", help="search the PACS, pull a series, diagnose it, store the report (DICOMweb)",
                               description=__doc__.split("\n\n")[0] + " Server and login: MEDFEW_PACS_URL, "
                               "MEDFEW_PACS_USER, MEDFEW_PACS_PASSWORD or MEDFEW_PACS_SETTINGS.")
    sub = pacs.add_subparsers(dest="pacs_command", required=True, metavar="{search,pull,diagnose,store}")

    p = sub.add_parser("search", help="list the series of the matching studies (QIDO-RS)")
    p.add_argument("--patient-id", default=None, help="PatientID (* wildcards allowed)")
    p.add_argument("--accession", default=None, help="AccessionNumber")
    p.add_argument("--study-date", default=None, help="YYYYMMDD, YYYY-MM-DD, or a range FROM..TO (either end open)")
    p.add_argument("--modality", default=None, help="only series of this modality (CR, CT, MR, ...)")
    p.add_argument("--limit", type=int, default=100, help="at most this many studies (default 100)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run_search)

    p = sub.add_parser("pull", help="save the images of a series as DICOM files (WADO-RS)")
    p.add_argument("--series", required=True, metavar="UID", help="SeriesInstanceUID")
    p.add_argument("--out", required=True, type=Path, help="folder to write into")
    p.add_argument("--label", default=None, metavar="CLASS",
                   help="write into OUT/CLASS/, so OUT is a support set for --support")
    p.set_defaults(func=run_pull)

    p = sub.add_parser("diagnose", help="diagnose the images of a series; --store-report files SR + PDF back")
    p.add_argument("--support", required=True, help="class-per-folder directory of labelled support scans")
    p.add_argument("--series", required=True, metavar="UID", help="SeriesInstanceUID of the scans to diagnose")
    p.add_argument("--checkpoint", default="default", help="run directory, .safetensors file, or 'default'")
    p.add_argument("--alpha", type=alpha_level, default=0.1, metavar="ALPHA",
                   help="level of the prediction sets (0.1: 90%% sets); 0 or 'none' turns them off")
    p.add_argument("--note", default="", help="clinician's note, stored with every query in the report")
    p.add_argument("--store-report", action="store_true",
                   help="store a DICOM SR and a DICOM PDF report into the series' study (STOW-RS)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_diagnose)

    p = sub.add_parser("store", help="store DICOM files on the PACS (STOW-RS)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(func=run_store)


def _client() -> PacsClient:
    """The PACS of the settings; request URLs stay out of ``-v`` logs (their query strings hold patient ids)."""
    from medfew.pacs import PacsClient, PacsSettings

    for name in ("dicomweb_client", "urllib3.connectionpool"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).getEffectiveLevel()))
    return PacsClient(PacsSettings.load())


def run_search(args: argparse.Namespace) -> int:
    """``medfew pacs search``: one line per series (patient fields on the screen only)."""
    matches = _client().search(patient_id=args.patient_id, accession_number=args.accession,
                               study_date=args.study_date, modality=args.modality, limit=args.limit)
    if args.json:
        print(json.dumps([m.to_dict() for m in matches], indent=2))
        return 0
    print(f"{'date':8}  {'mod':4} {'#':>4} {'inst':>5}  {'patient id':14} {'accession':12} series UID / description")
    for m in matches:
        number = "" if m.series_number is None else m.series_number
        instances = "" if m.instances is None else m.instances
        print(f"{m.study_date:8}  {m.modality:4} {number!s:>4} {instances!s:>5}  {m.patient_id[:14]:14} "
              f"{m.accession_number[:12]:12} {m.series_uid}  {m.series_description[:40]}")
    print(f"{len(matches)} series")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    """``medfew pacs pull``: write ``OUT[/CLASS]/<SOPInstanceUID>.dcm`` per image of the series."""
    from medfew.errors import ConfigError

    folder = args.out
    if args.label is not None:
        label = args.label.strip()
        if not label or label in (".", "..") or "/" in label or "\\" in label:
            raise ConfigError(f"--label {args.label[:60]!r}: give a class name (not empty, not a path)")
        folder = folder / label
    instances = _client().pull_series(args.series)
    folder.mkdir(parents=True, exist_ok=True)
    for instance in instances:
        (folder / instance.name).write_bytes(instance.data)
    print(f"pulled {len(instances)} image(s) of series {args.series} into {folder}")
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    """``medfew pacs diagnose``: adapt to ``--support``, diagnose every image of the series, maybe store back."""
    from medfew.data.sources import manifest_from_folder
    from medfew.diagnosis import DiagnosisSession
    from medfew.errors import ImageInputError, ImageReadError, SupportSetError
    from medfew.pacs import store_report
    from medfew.reporting import build_report, report_inputs

    client = _client()
    instances = client.pull_series(args.series)  # before the model: a bad UID fails fast
    manifest = manifest_from_folder(args.support)
    session = DiagnosisSession(args.checkpoint, alpha=args.alpha)
    skipped: list[tuple[str, str]] = [(path, reason) for path, reason in manifest.ignored]
    for name in manifest.class_names:
        session.add_class(name)
    for row in manifest.rows:
        try:
            session.add_support(row.path, row.label)
        except (ImageReadError, ImageInputError) as exc:
            skipped.append((str(row.path), getattr(exc, "reason", None) or str(exc)))
    session.adapt()
    diagnosed = []
    for instance in instances:
        try:
            diagnosed.append((instance, session.diagnose(instance.data, name=instance.name,
                                                         saliency=args.store_report)))
        except (ImageReadError, ImageInputError) as exc:
            skipped.append((instance.name, getattr(exc, "reason", None) or str(exc)))
    for path, reason in skipped:
        print(f"medfew: skipped {path}: {reason}", file=sys.stderr)
    if not diagnosed:
        raise ImageReadError(args.series, "no image of this series could be read (see the messages above)")
    try:
        loo = session.leave_one_out()
    except SupportSetError:
        loo = None
    stored = None
    if args.store_report:
        report = build_report(report_inputs(session), [p for _, p in diagnosed], notes=args.note, leave_one_out=loo)
        stored = store_report(client, report, [i.data for i, _ in diagnosed])
    rows = [{"instance": i.sop_instance_uid, **p.to_dict()} for i, p in diagnosed]
    if args.json:
        print(json.dumps({"series": args.series, "predictions": rows,
                          "leave_one_out_accuracy": None if loo is None else loo.accuracy,
                          "stored": None if stored is None else vars(stored),
                          "skipped": [{"file": f, "reason": r} for f, r in skipped]}, indent=2))
    else:
        for row in rows:
            ranked = sorted(row["probabilities"].items(), key=lambda item: -item[1])
            print(f"{row['instance']}: {row['prediction']} ({row['probabilities'][row['prediction']]:.3f})"
                  + ("  [uncertain]" if row["uncertain"] else ""))
            print("  probabilities: " + ", ".join(f"{name} {value:.3f}" for name, value in ranked))
            print(f"  prediction set: {row['set_statement']}")
        if loo is not None:
            print(f"leave-one-out accuracy on the support set: {loo.accuracy:.1%} ({loo.correct} of {loo.total})")
        if stored is not None:
            print(f"stored the DICOM SR {stored.sr_uid} and the DICOM PDF {stored.pdf_uid} into study "
                  f"{stored.study_uid} on {client.settings.display_url}")
    return 1 if skipped else 0


def run_store(args: argparse.Namespace) -> int:
    """``medfew pacs store FILE...``."""
    client = _client()
    uids = client.store(args.files)
    print(f"stored {len(uids)} object(s) on {client.settings.display_url}")
    return 0
