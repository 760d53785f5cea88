"""``vision review evidence``: write an evidence package, and verify one offline.

``vision review evidence JOB_OR_CHANGE --items IDS --out pkg.zip`` is short for ``vision
review evidence make ...``; ``vision review evidence verify pkg.zip`` checks a package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from vision.cli_options import out_option, overwrite_option

DB_OPTION = typer.Option(
    None, "--db", help="database URL (default: VISION_REVIEW_DB, else SQLite in VISION_REVIEW_DATA)"
)

_PROVES = (
    "What `verify` proves depends on what you hold. With the package alone: every file is the one its "
    "manifest lists (one changed byte anywhere, the manifest included, is named), the audit rows link up "
    "to the recorded chain head, the decisions and items are the ones those rows record, each picture is "
    "exactly the rendering of its GeoTIFF crop(s), and the model cards name the recorded models. That shows "
    "the package is consistent, not that the service made it: anyone could write a consistent package.\n\n"
    "With --anchor FILE (heads kept off-site with `vision review audit anchor`): the rows are those the "
    "service's chain held at an anchored head that falls inside them.\n\n"
    "With the audit key (VISION_REVIEW_SECRET of the service, or VISION_REVIEW_AUDIT_KEY_FILE): every row's "
    "HMAC, the signed head and the package MAC are checked as well: the service made the package and nothing "
    "in it changed since."
)


class _EvidenceGroup(TyperGroup):
    """``evidence JOB ...`` runs ``evidence make JOB ...``; ``evidence verify ...`` verifies."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["make", *args]
        return super().resolve_command(ctx, args)


evidence_app = typer.Typer(
    cls=_EvidenceGroup,
    no_args_is_help=True,
    help="Evidence packages: `evidence JOB_OR_CHANGE --items IDS --out pkg.zip` writes one (short for "
         "`evidence make`), `evidence verify pkg.zip` checks one offline.\n\n" + _PROVES,
)


@evidence_app.command("make")
def evidence_make(
    job: str = typer.Argument(..., metavar="JOB_OR_CHANGE",
                              help="job number, or the job or change folder that was imported"),
    items: str = typer.Option(..., "--items", metavar="IDS", help="item ids: 12,14,20-25"),
    out: Path = out_option("the package to write (.zip)", required=True),
    overwrite: bool = overwrite_option("an existing package"),
    db: str | None = DB_OPTION,
) -> None:
    """Write the evidence package of some items: each date's window as a GeoTIFF crop (CRS and
    transform) and as shown, the model cards and ONNX sha256, the inputs' sha256, the decisions
    with reviewers and times, the audit rows covering them up to the chain head, and a manifest
    of sha256 for every file.

    Needs the service's VISION_REVIEW_SECRET (the package is MAC'd with the audit key; the
    packaging is itself audited). Refuses an item whose input changed since it was classified.
    Anchor the head afterwards (`vision review audit anchor --to FILE`) so that holders of the
    package alone can tie it to the chain.

    Example: vision review evidence 7 --items 101-105,230 --out evidence/case-17.zip
    """
    from rich.markup import escape

    from review.cli import _open
    from review.evidence.build import build_package, parse_items
    from review.jobs.files import service_roots
    from review.service import cli_actor

    ids = parse_items(items)
    settings, database = _open(db)
    done = build_package(database, job, ids, out, service_roots(settings.job_roots, settings.data_dir), cli_actor(),
                         overwrite)
    typer.echo(f"wrote {escape(str(done.out))}: {done.items} items, {done.files} files, audit rows up to the head "
               f"{done.head_seq} ({done.head_hash[:16]}...), manifest sha256 {done.manifest_sha256}")
    for n in done.notes:
        typer.echo(f"note: {escape(n)}")


_VERIFY_HELP = (
    "Check an evidence package offline; exit 1 naming the first file that does not hold.\n\n"
    "Needs nothing but the package (no database, no input, no network).\n\n" + _PROVES
    + "\n\nExample: vision review evidence verify case-17.zip --anchor /mnt/offsite/review-anchors.jsonl"
)


@evidence_app.command("verify", help=_VERIFY_HELP)
def evidence_verify(
    package: Path = typer.Argument(..., help="the evidence package (.zip)"),
    anchor: list[Path] = typer.Option([], "--anchor",
                                      help="file of heads written by `vision review audit anchor --to` (repeatable)"),
) -> None:
    """Check an evidence package offline (see ``_VERIFY_HELP``)."""
    from review.audit_anchor import read_anchors
    from review.auth.keys import audit_key_from_env
    from review.evidence.layout import EvidenceError
    from review.evidence.verify import verify_package

    anchors: list[Any] = [a for f in anchor for a in read_anchors(f)]
    try:
        report = verify_package(package, key=audit_key_from_env(), anchors=anchors)
    except EvidenceError as exc:
        typer.echo(f"evidence package BROKEN: {exc}", err=True)
        raise typer.Exit(1) from exc
    for line in report.lines():
        typer.echo(line)

