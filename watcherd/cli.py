"""``watcherd`` command line: run, submit, status, validate, retry, image build, login."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path

import yaml

from watcherd import __version__
from watcherd.config import Config, ConfigError, load_config
from watcherd.filters import is_job_name
from watcherd.fsutil import fsync_dir, rename_noreplace
from watcherd.job import MAX_JOB_BYTES, InvalidJob, parse_job
from watcherd.spool import JOB_ID_EXAMPLE, Layout, NotRetryable, Spool, is_job_id


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(
            args.config,
            root=str(args.root) if args.root else None,
            log_format=getattr(args, "log_format", None),
        )
    except ConfigError as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_format)
    result: int = args.command(config, args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watcherd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"watcherd {__version__}")
    parser.add_argument(
        "--config", type=Path, help="config file (default /etc/watcherd/config.yaml)"
    )
    parser.add_argument(
        "--root", type=Path, help="work root holding inbox/, done/, ... (default /work)"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--log-format", choices=("text", "json"))
    run.add_argument("--no-build", action="store_true", help="do not build a missing image")
    run.set_defaults(command=_run)

    submit = commands.add_parser("submit", help="drop a job into the inbox safely")
    submit.add_argument("file", nargs="?", type=Path, help="a job file to submit")
    submit.add_argument("--repo-url")
    submit.add_argument("--prompt")
    submit.add_argument("--repo-ref")
    submit.add_argument("--repo-dir")
    submit.add_argument("--mode", choices=("exec", "review"))
    submit.add_argument("--model")
    submit.add_argument("--timeout")
    submit.add_argument("--name", help="job file name in the inbox (default: from FILE or 'job')")
    submit.set_defaults(command=_submit)

    status = commands.add_parser("status", help="jobs per folder, running jobs with their age")
    status.add_argument("--json", action="store_true")
    status.set_defaults(command=_status)

    validate = commands.add_parser("validate", help="check job files without running them")
    validate.add_argument("files", nargs="+", type=Path)
    validate.set_defaults(command=_validate)

    retry = commands.add_parser("retry", help="put a failed job back into the inbox")
    retry.add_argument("job_id")
    retry.set_defaults(command=_retry)

    image = commands.add_parser("image", help="the worker image")
    image_commands = image.add_subparsers(required=True, metavar="ACTION")
    build = image_commands.add_parser("build", help="build the worker image")
    build.add_argument("--ca-cert", action="append", type=Path, default=[],
                       help="extra CA certificate to trust in the image (repeatable)")  # fmt: skip
    build.add_argument("--tag", help="image tag (default: the configured image)")
    build.set_defaults(command=_image_build)

    login = commands.add_parser("login", help="log Codex in, into the bot auth dir")
    login.add_argument("--with-api-key", action="store_true", help="read an API key from stdin")
    login.set_defaults(command=_login)
    return parser


def _setup_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    ))  # fmt: skip
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


# -- commands ---------------------------------------------------------------------------


def _run(config: Config, args: argparse.Namespace) -> int:
    from watcherd.daemon import Server
    from watcherd.image import ImageError, ensure_image

    if not args.no_build:
        try:
            ensure_image(config)
        except ImageError as exc:
            logging.getLogger("watcherd").error("%s", exc)
            return 1

    def reload() -> Config:
        # SIGHUP: the same file, environment and flags that `main` built `config` from.
        return load_config(
            args.config, root=str(args.root) if args.root else None, log_format=args.log_format
        )

    Server(config, reload=reload).run()
    return 0


def _submit(config: Config, args: argparse.Namespace) -> int:
    if args.name is not None and not _is_plain_name(args.name):
        print(
            f"watcherd: --name {args.name!r}: give a plain file name, without '/' and not "
            "starting with '.' (the daemon never claims those)",
            file=sys.stderr,
        )
        return 1
    if args.file:
        try:
            data = _read_job_file(args.file)
        except OSError as exc:
            print(f"watcherd: {args.file}: {_os_problem(exc)}", file=sys.stderr)
            return 1
        # A dot-name would sit in the inbox unclaimed, as if still being written.
        name = args.name or args.file.name.lstrip(".") or "job.yaml"
    else:
        fields = {
            key: getattr(args, key)
            for key in ("repo_url", "prompt", "repo_ref", "repo_dir", "mode", "model", "timeout")
            if getattr(args, key) is not None
        }
        data = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True).encode()
        name = args.name or "job.yaml"
    if not is_job_name(name):
        name = f"{name}.yaml"
    try:
        parse_job(data, config)
    except InvalidJob as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    inbox = Layout(config.root).inbox
    try:
        inbox.mkdir(parents=True, exist_ok=True)
        target = submit_bytes(inbox, name, data)
    except OSError as exc:
        print(f"watcherd: cannot write into {inbox}: {_os_problem(exc)}", file=sys.stderr)
        return 1
    print(target)
    return 0


def _is_plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def _read_job_file(path: Path) -> bytes:
    """A job file's bytes, at most one more than a job may have: enough for parse_job to
    say it is too big without reading all of a huge file."""
    with path.open("rb") as handle:
        return handle.read(MAX_JOB_BYTES + 1)


def _os_problem(exc: OSError) -> str:
    """'no such file' rather than "[Errno 2] No such file or directory: '...'"."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a job file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or str(exc)).lower()


def submit_bytes(inbox: Path, name: str, data: bytes) -> Path:
    """Write under a dot-name the daemon ignores, then rename in: it never sees half a file.
    A name already taken gets a suffix rather than replacing another job."""
    tmp = inbox / f".{name}.{secrets.token_hex(4)}.tmp"
    with tmp.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    target = inbox / name
    for _ in range(100):
        try:
            rename_noreplace(tmp, target)
            break
        except FileExistsError:
            stem, dot, suffix = name.rpartition(".")
            target = inbox / f"{stem}-{secrets.token_hex(3)}{dot}{suffix}"
    else:  # pragma: no cover - 100 random collisions
        tmp.unlink()
        raise FileExistsError(target)
    fsync_dir(inbox)
    return target


def _status(config: Config, args: argparse.Namespace) -> int:
    layout = Layout(config.root)
    counts = {
        folder.name: sum(1 for p in folder.iterdir() if is_job_name(p.name))
        if folder.is_dir()
        else 0
        for folder in (layout.inbox, layout.running, layout.done, layout.failed)
    }
    now = time.time()
    running: list[dict[str, str | int]] = []
    if layout.running.is_dir():
        for path in sorted(layout.running.glob("*.yaml")):
            age = round(now - path.stat().st_ctime)  # ctime: the claim (rename)
            running.append({"job_id": path.name.removesuffix(".yaml"), "age_seconds": age})
    if args.json:
        print(json.dumps({"counts": counts, "running": running}))
        return 0
    print("  ".join(f"{name}: {count}" for name, count in counts.items()))
    for job in running:
        print(f"running  {job['job_id']}  {_age(float(job['age_seconds']))}")
    return 0


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _validate(config: Config, args: argparse.Namespace) -> int:
    bad = 0
    for path in args.files:
        try:
            # As the daemon sees it: it never follows a link nor opens a fifo.
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise InvalidJob("not a regular file")
            parse_job(_read_job_file(path), config)
        except InvalidJob as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            bad += 1
        except OSError as exc:
            print(f"{path}: {_os_problem(exc)}", file=sys.stderr)
            bad += 1
        else:
            print(f"{path}: ok")
    return 1 if bad else 0


def _retry(config: Config, args: argparse.Namespace) -> int:
    # Checked here before anything is created under the root; requeue checks again.
    if not is_job_id(args.job_id):
        print(
            f"watcherd: retry takes a failed job's id, such as {JOB_ID_EXAMPLE}, "
            f"not a path or file name: {args.job_id!r}",
            file=sys.stderr,
        )
        return 1
    try:
        layout = Layout(config.root)
        layout.ensure()
        target = Spool(layout).requeue(args.job_id)
    except NotRetryable as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"watcherd: {exc.filename or config.root}: {_os_problem(exc)}", file=sys.stderr)
        return 1
    print(target)
    return 0


def _image_build(config: Config, args: argparse.Namespace) -> int:
    from watcherd.image import ImageError, build_image

    try:
        build_image(config, ca_certs=args.ca_cert, tag=args.tag)
    except ImageError as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    return 0


def _login(config: Config, args: argparse.Namespace) -> int:
    from watcherd.image import login

    return login(config, with_api_key=args.with_api_key)


if __name__ == "__main__":
    sys.exit(main())
