"""``medfew diagnose``: adapt to a class-per-folder support set and diagnose query scans.

    medfew diagnose --support DIR --query FILE... [--checkpoint default|PATH] [--report FILE.pdf|.json|.dcm]
                    [--json] [--strict] [--alpha 0.1] [--note TEXT] [--include-identifiers]

One unreadable support or query file does not sink the run: it is reported by name on stderr, the
rest is diagnosed, and the end of the output says how many files were skipped (exit status 1 then;
``--strict`` stops at the first bad file instead, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfew.errors import ConfigError, ImageInputError, ImageReadError, SupportSetError

if TYPE_CHECKING:
    from medfew.diagnosis import DiagnosisSession, LeaveOneOutResult, Prediction

DICOM_SUFFIX = ".dcm"
EXIT_SKIPPED = 1
"""Exit status when the run finished but some files were skipped as unreadable."""


@dataclass
class _Skipped:
    """Files left out of the run, with the reason for each (printed as they happen)."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, role: str, path: str, reason: str) -> None:
        self.items.append((path, reason))
        print(f"medfew: skipped {role} {path}: {reason}", file=sys.stderr)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``diagnose`` to the ``medfew`` command line."""
    from medfew.cli import alpha_level

    p = commands.add_parser("diagnose", help="adapt to a class-per-folder support set and diagnose query scans")
    p.add_argument("--checkpoint", default="default", help="run directory, .safetensors file, or 'default'")
    p.add_argument("--support", required=True, help="class-per-folder directory of labelled support scans")
    p.add_argument("--query", required=True, nargs="+", metavar="FILE", help="scans to diagnose")
    p.add_argument("--report", default=None,
                   help="write a report: FILE.pdf, FILE.json, or FILE.dcm (a DICOM Encapsulated PDF filed into the "
                        "query's study; DICOM queries only; several queries write FILE-1.dcm, FILE-2.dcm, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file instead of skipping it")
    p.add_argument("--include-identifiers", action="store_true",
                   help="copy patient identifiers and free-text DICOM attributes into the report (off by default)")
    p.add_argument("--note", default=None, help="clinician's note added to every query in the report")
    p.add_argument("--alpha", type=alpha_level, default=0.1, metavar="ALPHA",
                   help="level of the prediction sets (0.1: sets meant to hold the true class in 90%% of "
                        "cases); 0 or 'none' turns them off")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``medfew diagnose``; returns the exit status."""
    from medfew.data.sources import manifest_from_folder
    from medfew.diagnosis import DiagnosisSession

    report_path = _check_report_path(args.report)
    session = DiagnosisSession(args.checkpoint, alpha=args.alpha)
    skipped = _Skipped()
    manifest = manifest_from_folder(args.support)
    for path, reason in manifest.ignored:
        skipped.add("support file", path, reason)
    for name in manifest.class_names:
        session.add_class(name)
    for row in manifest.rows:
        _try(args.strict, skipped, "support scan", row.path, lambda row=row: session.add_support(row.path, row.label))
    session.adapt()
    diagnosed: list[tuple[str, Prediction]] = []
    for path in args.query:
        prediction = _try(args.strict, skipped, "query", path,
                          lambda path=path: session.diagnose(path, saliency=report_path is not None))
        if prediction is not None:
            diagnosed.append((path, prediction))
    if not diagnosed:
        raise ImageReadError(args.query[0] if len(args.query) == 1 else "--query",
                             "no query scan could be read (see the messages above)")
    try:
        loo = session.leave_one_out()  # read from the scores adapt() computed for the prediction sets
    except SupportSetError:  # a class with a single scan: no reliability estimate
        loo = None
    written = _write_reports(session, diagnosed, loo, report_path, args) if report_path is not None else []
    if args.json:
        print(json.dumps(_json_output(session, diagnosed, loo, written, skipped), indent=2, allow_nan=False))
    else:
        _print_text(session, diagnosed, loo, written, skipped, total=len(manifest.rows) + len(args.query))
    return EXIT_SKIPPED if skipped.items else 0


def _check_report_path(report: str | None) -> Path | None:
    if report is None:
        return None
    from medfew.reporting import REPORT_WRITERS

    path = Path(report)
    suffixes = (*REPORT_WRITERS, DICOM_SUFFIX)
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"--report {path}: the file must end in {', '.join(suffixes)}")
    if path.is_dir():
        raise ConfigError(f"--report {path}: is a directory; give a file name such as {path / 'report.pdf'}")
    if not path.parent.is_dir():
        raise ConfigError(f"--report {path}: the folder {path.parent} does not exist")
    return path


def _try(strict: bool, skipped: _Skipped, role: str, path: str | Path, action: Any) -> Any:
    """Run ``action()``; an unreadable file is skipped (or re-raised with ``strict``)."""
    try:
        return action()
    except (ImageReadError, ImageInputError) as exc:
        if strict:
            raise
        skipped.add(role, str(path), getattr(exc, "reason", None) or str(exc))
        return None


def _write_reports(session: DiagnosisSession, diagnosed: list[tuple[str, Prediction]],
                   loo: LeaveOneOutResult | None, path: Path, args: argparse.Namespace) -> list[Path]:
    from medfew.reporting import REPORT_WRITERS, build_report, report_inputs, write_dicom

    inputs = report_inputs(session)
    predictions = [p for _, p in diagnosed]
    suffix = path.suffix.lower()
    if suffix != DICOM_SUFFIX:
        report = build_report(inputs, predictions, notes=args.note or "", include_identifiers=args.include_identifiers,
                              leave_one_out=loo)
        REPORT_WRITERS[suffix](report, path)
        return [path]
    not_dicom = [query for query, p in diagnosed if p.dicom is None]
    if not_dicom:
        raise ConfigError(f"--report {path}: a DICOM report files into the scan's study, but {not_dicom[0]} is not "
                          "a DICOM file; write a .pdf or .json report instead")
    paths = [path] if len(diagnosed) == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}")
                                                for i in range(1, len(diagnosed) + 1)]
    for index, ((query, _), out) in enumerate(zip(diagnosed, paths)):
        single = build_report(inputs, [predictions[index]], notes=args.note or "",
                              include_identifiers=args.include_identifiers, leave_one_out=loo)
        write_dicom(single, out, query)
    return paths


def _rows(diagnosed: list[tuple[str, Prediction]]) -> list[dict[str, Any]]:
    return [{"file": str(path), "prediction": p.predicted, "probabilities": p.probabilities,
             "prediction_set": None if p.prediction_set is None else list(p.prediction_set),
             "set_confidence": p.set_confidence, "set_note": p.set_note, "set_statement": p.set_statement,
             "uncertain": p.uncertain, "out_of_distribution": p.out_of_distribution}
            for path, p in diagnosed]


def _json_output(session: DiagnosisSession, diagnosed: list[tuple[str, Prediction]], loo: LeaveOneOutResult | None,
                 written: list[Path], skipped: _Skipped) -> dict[str, Any]:
    return {"predictions": _rows(diagnosed), "support": session.support_counts(),
            "temperature": session.temperature, "alpha": session.alpha,
            "leave_one_out_accuracy": None if loo is None else loo.accuracy,
            "support_warning": None if loo is None else loo.warning,
            "reports": [str(p) for p in written],
            "skipped": [{"file": path, "reason": reason} for path, reason in skipped.items]}


def _print_text(session: DiagnosisSession, diagnosed: list[tuple[str, Prediction]], loo: LeaveOneOutResult | None,
                written: list[Path], skipped: _Skipped, *, total: int) -> None:
    for row in _rows(diagnosed):
        flags = [f.replace("_", " ") for f in ("uncertain", "out_of_distribution") if row[f]]
        score = row["probabilities"][row["prediction"]]
        print(f"{row['file']}: {row['prediction']} ({score:.3f}){'  [' + ', '.join(flags) + ']' if flags else ''}")
        ranked = sorted(row["probabilities"].items(), key=lambda item: -item[1])
        print("  probabilities: " + ", ".join(f"{name} {value:.3f}" for name, value in ranked))
        print(f"  prediction set: {row['set_statement']}")
    counts = session.support_counts()
    print(f"support: {sum(counts.values())} scans in {len(counts)} classes ("
          + ", ".join(f"{name} {n}" for name, n in counts.items()) + ")")
    if loo is None:
        print("leave-one-out accuracy: not available (a class has a single scan)")
    else:
        print(f"leave-one-out accuracy on the support set: {loo.accuracy:.1%} ({loo.correct} of {loo.total})")
        if loo.warning:
            print(f"WARNING: {loo.warning}")
    temperature = session.temperature
    print(f"probabilities calibrated with temperature T = {temperature:.3g}" if temperature != 1.0
          else "probabilities are not calibrated (the checkpoint has no temperature)")
    for path in written:
        print(f"report written to {path}")
    if skipped.items:
        print(f"skipped {len(skipped.items)} unreadable or unusable file(s) of {total} (listed above on stderr)")
