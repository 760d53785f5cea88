"""`vision review ...` and `vision users ...`: the review service from the command line.

Examples::

    export VISION_REVIEW_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')
    vision users add ada --role admin
    vision review import runs/2024-06-scenes --interest AnnualCrop
    vision review serve --port 8000
    vision review export 1 --format dataset --out reviewed/2024-06
    vision review audit verify
    vision review audit anchor --to /mnt/offsite/review-anchors.jsonl
    vision review import changes/crops --transitions appeared
    vision review evidence 3 --items 12,14 --out case.zip
    vision review evidence verify case.zip
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from review.cli_evidence import evidence_app
from review.formats import ExportFormat
from vision.cli_options import out_option, overwrite_option, progress_option

if TYPE_CHECKING:
    from review.audit import VerifyResult
    from review.db.engine import Database
    from review.settings import ReviewSettings

DB_OPTION = typer.Option(
    None, "--db", help="database URL (default: VISION_REVIEW_DB, else SQLite in VISION_REVIEW_DATA)"
)

review_app = typer.Typer(
    no_args_is_help=True,
    help="The review service: serve the web app, import jobs, export results, verify the audit log.",
)
audit_app = typer.Typer(no_args_is_help=True, help="The keyed, hash-chained audit log: verify and anchor it.")
users_app = typer.Typer(no_args_is_help=True, help="People who sign in to the review service.")
review_app.add_typer(audit_app, name="audit")
review_app.add_typer(evidence_app, name="evidence")


class Role(StrEnum):
    """Roles, for option parsing."""

    analyst = "analyst"
    reviewer = "reviewer"
    admin = "admin"


def _open(db_url: str | None, require_secret: bool = False) -> tuple[ReviewSettings, Database]:
    from review.service import open_database
    from review.settings import ReviewSettings

    settings = ReviewSettings.from_env(db_url, require_secret=require_secret)
    return settings, open_database(settings.db_url)


@review_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="port to listen on (0: any free port; the URL is printed)"),
    db: str | None = DB_OPTION,
    worker: bool = typer.Option(True, help="also start a worker process that runs submitted jobs"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate (chain): serve HTTPS"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert"),
) -> None:
    """Serve the review web app (needs VISION_REVIEW_SECRET); prints the URL it listens on.

    With --tls-cert/--tls-key: HTTPS, Secure cookies and HSTS. SIGTERM or Ctrl-C stops it and its worker.

    Example: vision review serve --port 8443 --tls-cert /etc/vision/cert.pem --tls-key /etc/vision/key.pem
    """
    from review.server import run_server

    run_server(host=host, port=port, db_url=db, worker=worker, tls_cert=tls_cert, tls_key=tls_key)


@review_app.command("worker")
def worker_cmd(
    db: str | None = DB_OPTION,
    parent: int | None = typer.Option(None, "--parent", hidden=True, help="stop when this process is gone"),
) -> None:
    """Run submitted jobs through `vision infer` (started by `serve`; run more for more throughput).

    SIGTERM or Ctrl-C: take no new job, finish the running one, exit.

    Example: vision review worker --db postgresql://review@localhost/review
    """
    from review.server import run_worker

    run_worker(db, parent)


@review_app.command("import")
def import_cmd(
    job_dir: Path = typer.Argument(..., help="a finished `vision infer` output folder, or a `vision change` folder"),
    db: str | None = DB_OPTION,
    name: str | None = typer.Option(None, help="job name (default: the folder name)"),
    interest: list[str] = typer.Option([], "--interest", help="class of interest (repeatable; job folders only)"),
    four_eyes: bool = typer.Option(
        False, help="second review for positives of those classes (for a change folder: for confirmed changes)"),
    transitions: list[str] = typer.Option(
        [], "--transitions",
        help="change folder: transitions to review (comma-separated or repeated; default appeared,disappeared,changed; "
             "also persisted, absent). uncertain and not_assessed windows are never queued"),
    again: bool = typer.Option(False, "--again", help="import a folder that was imported before, as a new job"),
    include_cloudy: bool = typer.Option(
        False, "--include-cloudy",
        help="job folders: queue the windows not assessed because of cloud too, for a reviewer to label "
             "(by default they are counted as not assessed, like nodata)"),
    progress: bool = progress_option(),
) -> None:
    """Import a finished job folder, or a `vision change` folder; its rows enter the review queue.

    As for imports from the web page, the folder and every input its table names must lie
    inside the allowed folders (VISION_REVIEW_ROOTS and the service's DATA/jobs): add the
    folder to VISION_REVIEW_ROOTS to import from elsewhere. For a change folder, both jobs'
    folders and both dates' inputs must lie inside them too.

    Example: vision review import runs/2024-06 --interest AnnualCrop --four-eyes

    Example: vision review import changes/crops --transitions appeared --four-eyes
    """
    from rich.progress import Progress

    from review.db.models import Job
    from review.jobs.change_folder import is_change_folder
    from review.jobs.change_import import import_change_folder
    from review.jobs.files import service_roots
    from review.jobs.importer import import_job
    from review.service import cli_actor
    from vision.errors import ConfigError

    settings, database = _open(db)
    roots = service_roots(settings.job_roots, settings.data_dir)
    change = is_change_folder(job_dir, roots)
    if change and interest:
        raise ConfigError("--interest is for job folders: a change folder's classes of interest are the ones "
                          "`vision change --classes` compared")
    if change and include_cloudy:
        raise ConfigError("--include-cloudy is for job folders: a change folder never queues not-assessed windows")
    if transitions and not change:
        raise ConfigError(f"--transitions is for `vision change` folders; {job_dir} has no change_manifest.json "
                          "inside the allowed folders")
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("importing rows", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if change:
            job_id = import_change_folder(database, job_dir, cli_actor(), roots, name=name, transitions=transitions,
                                          four_eyes=four_eyes, again=again, on_progress=on_progress)
        else:
            job_id = import_job(
                database, job_dir, cli_actor(), roots, name=name, classes_of_interest=interest,
                four_eyes=four_eyes, again=again, on_progress=on_progress, include_cloudy=include_cloudy,
            )
    with database.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        if change:
            typer.echo(
                f"job {job.id}: {job.progress_total - job.rows_skipped} changes queued for review "
                f"({', '.join(job.transitions or [])}), {job.rows_skipped} windows not queued (other transitions, "
                "uncertain or not assessed)"
            )
            return
        by = job.not_assessed or {}
        typer.echo(
            f"job {job.id}: {job.progress_total - job.rows_skipped} items queued for review"
            + (" (cloudy windows included, without a class)" if job.include_cloudy else "")
            + f", {job.rows_skipped} rows not assessed (nodata {by.get('nodata', 0)}, cloudy {by.get('cloudy', 0)}, "
            f"error {by.get('error', 0)}, non-finite numbers {by.get('invalid', 0)})"
        )


@review_app.command("export")
def export_cmd(
    job_id: int = typer.Argument(..., help="job number (see the jobs page)"),
    out: Path = out_option("output file, or folder for --format dataset", required=True),
    fmt: ExportFormat = typer.Option(ExportFormat.geojson, "--format", help="what to write"),
    overwrite: bool = overwrite_option("an existing output"),
    db: str | None = DB_OPTION,
) -> None:
    """Export human-decided results, or the labelled dataset for `vision train`.

    Example: vision review export 3 --format dataset --out reviewed/job3
    """
    from review import audit
    from review.export import export_job
    from review.jobs.files import service_roots
    from review.service import cli_actor

    settings, database = _open(db)
    with database.read() as s:  # files are written outside any write transaction
        done = export_job(s, job_id, fmt, out, service_roots(settings.job_roots, settings.data_dir), overwrite)
    with database.write() as s:
        audit.append(s, cli_actor(), "export", f"job:{job_id}", None,
                     {"format": fmt.value, "items": done.items, "skipped": len(done.skipped), "out": str(out)}, "cli")
    typer.echo(f"{done.items} items written to {out}")
    if done.skipped:
        typer.echo(f"{len(done.skipped)} labelled items skipped (listed in {out / 'skipped.csv'}):")
        for reason, n in done.reasons()[:10]:
            typer.echo(f"  {n} x {reason}")


ANCHOR_OPTION = typer.Option(
    [], "--anchor", help="file of heads written by `audit anchor --to` (repeatable); fail if the log lost any"
)


def _verify(db: str | None, anchor_files: list[Path]) -> VerifyResult:
    from review.audit import verify
    from review.audit_anchor import read_anchors

    anchors = [a for f in anchor_files for a in read_anchors(f)]
    _, database = _open(db)
    with database.snapshot() as s:
        result = verify(s, anchors=anchors)
    if not result.ok:
        typer.echo(result.message, err=True)
        raise typer.Exit(1)
    return result


@audit_app.command("verify")
def audit_verify(db: str | None = DB_OPTION, anchor: list[Path] = ANCHOR_OPTION) -> None:
    """Check the keyed audit chain, its head, anchored heads and the tables exports read.

    Exit 1 naming the first bad row or table row.

    Needs the service's VISION_REVIEW_SECRET (or VISION_REVIEW_AUDIT_KEY_FILE): the chain is keyed with it.

    Example: vision review audit verify --anchor /mnt/offsite/review-anchors.jsonl
    """
    result = _verify(db, anchor)
    extra = f", {len(anchor)} anchor file(s) matched" if anchor else ""
    typer.echo(f"{result.message}{extra}")


@audit_app.command("anchor")
def audit_anchor(
    to: Path | None = typer.Option(None, "--to", help="append the head to this file (O_APPEND) instead of printing"),
    db: str | None = DB_OPTION,
) -> None:
    """Verify the log, then print or append its head (row, hash, time) for keeping off-site.

    Keep the anchors where the database's writers cannot reach (another host, write-once storage).

    `audit verify --anchor FILE` then detects a log cut short or rolled back.

    Example: vision review audit anchor --to /mnt/offsite/review-anchors.jsonl
    """
    from review.audit_anchor import append_anchor, make_anchor

    result = _verify(db, [])
    anchor = make_anchor(result.rows, result.head_hash)
    if to is None:
        typer.echo(anchor.line())
        return
    append_anchor(to, anchor)
    typer.echo(f"anchored row {anchor.seq} ({anchor.hash[:16]}...) to {to}")


def _password(prompt: bool, stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="user name"),
    role: Role = typer.Option(..., "--role", help="analyst, reviewer or admin"),
    password_stdin: bool = typer.Option(False, help="read the password from stdin (scripts)"),
    db: str | None = DB_OPTION,
) -> None:
    """Add a person; the password is prompted for and stored as an argon2 hash.

    Passwords: 12+ characters mixing 3 of lower-case, upper-case, digits, symbols (or a 16+ passphrase).

    Also: 8+ different characters, no runs like 'abcd', not the user name, not a common password.

    Example: vision users add ada --role reviewer
    """
    from review.auth.users import add_user
    from review.service import cli_actor

    _, database = _open(db)
    password = _password(True, password_stdin)
    with database.write() as s:
        add_user(s, name, role.value, password, cli_actor())
    typer.echo(f"added {name} ({role.value})")


@users_app.command("list")
def users_list(db: str | None = DB_OPTION) -> None:
    """List people, roles and lock state.

    Example: vision users list
    """
    from sqlalchemy import select

    from review.db.models import User

    _, database = _open(db)
    with database.read() as s:
        users = s.execute(select(User).order_by(User.name)).scalars().all()
        for u in users:
            state = "active" if u.active else "disabled"
            locked = f", locked until {u.locked_until:%Y-%m-%d %H:%M} UTC" if u.locked_until else ""
            typer.echo(f"{u.name}\t{u.role}\t{state}{locked}")
    if not users:
        typer.echo("no users yet: add the first admin with `vision users add NAME --role admin`", err=True)


@users_app.command("set")
def users_set(
    name: str = typer.Argument(..., help="user name"),
    role: Role | None = typer.Option(None, "--role", help="new role"),
    active: bool | None = typer.Option(None, "--enable/--disable", help="allow or stop sign-in"),
    unlock: bool = typer.Option(False, help="lift a lockout after failed logins"),
    password: bool = typer.Option(False, "--password", help="set a new password (prompted)"),
    password_stdin: bool = typer.Option(False, help="read the new password from stdin"),
    db: str | None = DB_OPTION,
) -> None:
    """Change a person's role, password, lock or active state (audited).

    A new password, a role change, --disable or --enable revokes all of the person's sessions.

    Example: vision users set ada --role admin --unlock
    """
    from review.auth.users import get_user, update_user
    from review.service import cli_actor

    _, database = _open(db)
    new_password = _password(True, password_stdin) if (password or password_stdin) else None
    with database.write() as s:
        user = get_user(s, name)
        update_user(
            s,
            user,
            cli_actor(),
            role=role.value if role else None,
            active=active,
            unlock=unlock,
            password=new_password,
        )
    typer.echo(f"updated {name}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `vision` CLI."""
    app.add_typer(review_app, name="review")
    app.add_typer(users_app, name="users")
