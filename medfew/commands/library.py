"""``medfew library list|export|import|delete``: case libraries in the database, from the command line.

    medfew library list [--all-versions] [--json] [--db URL]
    medfew library export NAME [--version N] --out FILE.zip [--db URL]
    medfew library import FILE.zip [--name NAME] [--db URL]
    medfew library delete NAME [--version N] [--db URL]

The database is ``--db``, else ``$MEDFEW_DB_URL``, else ``~/.local/share/medfew/medfew.db``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DB_HELP = "SQLAlchemy database URL (default: $MEDFEW_DB_URL, else ~/.local/share/medfew/medfew.db)"


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``library`` and its sub-commands to ``medfew``'s parser."""
    library = commands.add_parser("library", help="list, export, import and delete case libraries")
    sub = library.add_subparsers(dest="library_command", required=True)
    p = sub.add_parser("list", help="saved case libraries (newest version of each)")
    p.add_argument("--all-versions", action="store_true", help="list every version")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("export", help="write a library as one zip (PNGs + manifest.json)")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=None, help="default: the newest")
    p.add_argument("--out", required=True, type=Path, help="the .zip file to write")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("import", help="add a library zip as the next version of its name")
    p.add_argument("archive", type=Path)
    p.add_argument("--name", default=None, help="save under this name instead of the manifest's")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.set_defaults(func=_cmd_import)
    p = sub.add_parser("delete", help="delete a library (every version, or --version N)")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--db", default=None, help=DB_HELP)
    p.set_defaults(func=_cmd_delete)


def _cmd_list(args: argparse.Namespace) -> int:
    from medfew.store import Store

    libraries = Store(args.db).list_libraries(all_versions=args.all_versions)
    if args.json:
        print(json.dumps([{"name": lib.name, "version": lib.version, "classes": lib.counts,
                           "saved_at": lib.saved_at.isoformat() + "Z" if lib.saved_at else None,
                           "saved_by": lib.saved_by} for lib in libraries], indent=2, ensure_ascii=False))
    elif not libraries:
        print("no case libraries saved")
    for lib in [] if args.json else libraries:
        print(f"{lib.describe()}  (saved {lib.saved_at:%Y-%m-%d %H:%M} UTC by {lib.saved_by})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from medfew.data.atomic import atomic_write_bytes
    from medfew.store import Store, export_library

    library = Store(args.db).load_library(args.name, args.version)
    atomic_write_bytes(args.out, export_library(library))
    print(f"{args.out}: {library.describe()}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from medfew.errors import ImageReadError
    from medfew.store import Store, import_library

    try:
        data = args.archive.read_bytes()
    except OSError as exc:
        raise ImageReadError(args.archive, f"cannot be read ({exc.strerror or exc})") from exc
    library = import_library(Store(args.db), data, args.archive.name, name=args.name)
    print(f"imported {library.describe()}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from medfew.store import Store

    count = Store(args.db).delete_library(args.name, args.version)
    print(f"deleted {count} version{'s' if count != 1 else ''} of {args.name!r}")
    return 0
