"""``watcherd`` command line: run, submit, wait, show, logs, status, validate, cancel, retry,
publish, serve, token, doctor, image build, login."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import yaml

from watcherd import __version__
from watcherd.cli.schedules import add_commands as add_schedule_commands
from watcherd.client.cancel import CancelAnswer
from watcherd.client.cancel import cancel as cancel_job
from watcherd.client.find import NoSuchJob, find_job, where
from watcherd.client.follow import follow_logs
from watcherd.client.jobview import age_text, describe, readable_run_state, view_job
from watcherd.client.submit import (
    BadName,
    inbox_name,
    is_plain_name,
    name_problem,
    os_problem,
    submit,
)
from watcherd.config import Config, ConfigError, load_config
from watcherd.job.eventfile import read_all_events
from watcherd.job.events import one_line, render
from watcherd.job.progress import read_progress
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import MAX_JOB_BYTES, Layout, NotRetryable, Spool
from watcherd.spool.jobid import JOB_ID_EXAMPLE, is_job_id
from watcherd.spool.lookup import JobRef, Place, dropped_name
from watcherd.spool.waiting import Ended, NotYet, WaitExit, wait_for_end
from watcherd.util.units import parse_duration


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
    submit.add_argument("--notify", action="append", metavar="TARGET",
                        help="a notify target named in the config (repeatable)")  # fmt: skip
    submit.set_defaults(command=_submit)

    wait = commands.add_parser(
        "wait", help="block until a job ends; print its exit record (exit 0 done, see README)"
    )
    wait.add_argument("job", metavar="NAME|ID", help="the name it was dropped as, or its id")
    wait.add_argument("--timeout", type=_duration, metavar="SECONDS",
                      help="give up after this long (30, 90s, 10m); exit 124")  # fmt: skip
    wait.set_defaults(command=_wait)

    show = commands.add_parser("show", help="a job's state, record, summary and files")
    show.add_argument("job", metavar="NAME|ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(command=_show)

    logs = commands.add_parser("logs", help="a job's progress: commands, edits, messages, tokens")
    logs.add_argument("job", metavar="NAME|ID")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    logs.set_defaults(command=_logs)

    status = commands.add_parser("status", help="jobs per folder, running jobs with their age")
    status.add_argument("--json", action="store_true")
    status.set_defaults(command=_status)

    validate = commands.add_parser("validate", help="check job files without running them")
    validate.add_argument("files", nargs="+", type=Path)
    validate.set_defaults(command=_validate)

    cancel = commands.add_parser(
        "cancel", help="cancel a queued or running job (its work so far is kept); see README"
    )
    cancel.add_argument("job", metavar="NAME|ID")
    cancel.add_argument("--no-wait", action="store_true",
                        help="return once requested, not when the job has ended")  # fmt: skip
    cancel.add_argument("--timeout", type=_duration, default=120.0, metavar="SECONDS",
                        help="wait this long for it to end (default 120); exit 124")  # fmt: skip
    cancel.set_defaults(command=_cancel)

    retry = commands.add_parser("retry", help="put a failed job back into the inbox")
    retry.add_argument("job_id")
    retry.set_defaults(command=_retry)

    serve = commands.add_parser(
        "serve", help="the HTTP API and dashboard over this root (never runs jobs); see README"
    )
    serve.add_argument("--host", help="address to listen on (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: serve.port, 8787)")
    serve.set_defaults(command=_serve)

    token = commands.add_parser("token", help="API tokens for `serve` (stored hashed)")
    token_commands = token.add_subparsers(required=True, metavar="ACTION")
    token_add = token_commands.add_parser("add", help="make a token; it is printed once")
    token_add.add_argument("name")
    token_add.add_argument("--scope", action="append", choices=("read", "submit", "admin"),
                           required=True, help="read, submit, admin (repeatable)")  # fmt: skip
    token_add.set_defaults(command=_token_add)
    token_list = token_commands.add_parser("list", help="token names and scopes")
    token_list.set_defaults(command=_token_list)
    token_remove = token_commands.add_parser("remove", help="revoke a token (and its sessions)")
    token_remove.add_argument("name")
    token_remove.set_defaults(command=_token_remove)
    publish = commands.add_parser(
        "publish", help="push an ended job's branch and open its pull request (by the daemon)"
    )
    publish.add_argument("job", metavar="NAME|ID")
    publish.add_argument("--as", dest="mode", choices=("draft", "ready", "branch"),
                         help="a draft or ready pull request, or the branch only (default: "
                         "the job's publish:, else draft)")  # fmt: skip
    publish.add_argument("--timeout", type=_duration, default=600.0, metavar="SECONDS",
                         help="wait this long for the outcome (default 10m); exit 124")  # fmt: skip
    publish.add_argument("--no-wait", action="store_true",
                         help="ask the daemon and return (the outcome: exit.json)")  # fmt: skip
    publish.set_defaults(command=_publish)

    doctor = commands.add_parser("doctor", help="check what this machine lacks to run jobs")
    doctor.set_defaults(command=_doctor)

    image = commands.add_parser("image", help="the worker image")
    image_commands = image.add_subparsers(required=True, metavar="ACTION")
    build = image_commands.add_parser("build", help="build an agent's worker image")
    build.add_argument("agents", nargs="*", metavar="AGENT",
                       help="codex, claude, ... or all (default: default_agent)")  # fmt: skip
    build.add_argument("--ca-cert", action="append", type=Path, default=[],
                       help="extra CA certificate to trust in the image (repeatable)")  # fmt: skip
    build.add_argument("--tag", help="image tag (default: the agent's image; one agent only)")
    build.set_defaults(command=_image_build)

    mcp = commands.add_parser(
        "mcp", help="serve this root's jobs as MCP tools on stdin/stdout, for agent hosts"
    )
    mcp.add_argument("--read-only", action="store_true",
                     help="offer no tool that submits (as mcp: {read_only: true})")  # fmt: skip
    mcp.set_defaults(command=_mcp)

    relay = commands.add_parser(
        "relay", help="on a Swarm node: serve the sockets of jobs whose tasks run here"
    )
    relay.add_argument("--connect", metavar="HOST:PORT",
                       help="the daemon's relay.listen address (default: the config's, "
                       "when it names one host)")  # fmt: skip
    relay.add_argument("--credential", type=Path,
                       help="the daemon's relay credential, copied here (default: the "
                       "config's relay.credential, else <root>/state/relay.pem)")  # fmt: skip
    relay.add_argument("--sockets-dir", type=Path,
                       help="default: the config's relay.sockets_dir")  # fmt: skip
    relay.set_defaults(command=_relay)

    skill = commands.add_parser("skill", help="the skill that teaches an agent to use watcherd")
    skill_commands = skill.add_subparsers(required=True, metavar="ACTION")
    install = skill_commands.add_parser("install", help="copy the skill where agent hosts load it")
    install.add_argument("--dir", type=Path, default=None,
                         help="the skills folder to install into (default ~/.openclaw/skills; "
                         "the skill goes into DIR/watcherd/)")  # fmt: skip
    install.set_defaults(command=_skill_install)

    login = commands.add_parser("login", help="log Codex in, into the bot auth dir")
    login.add_argument("--with-api-key", action="store_true", help="read an API key from stdin")
    login.set_defaults(command=_login)

    add_schedule_commands(commands)  # schedules; schedule pause|resume|run-now ID
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
    from watcherd.daemon.server import Server
    from watcherd.job.image import ImageError, ensure_image

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

    server = Server(config, reload=reload)
    server.run()
    return server.exit_code


SUBMIT_FIELDS = ("repo_url", "prompt", "repo_ref", "repo_dir", "mode", "model", "timeout", "notify")


def _submit(config: Config, args: argparse.Namespace) -> int:
    if args.name is not None and not is_plain_name(args.name):
        print(f"watcherd: --name {args.name[:60]!r}: {name_problem(args.name)}", file=sys.stderr)
        return 1
    if args.file:
        try:
            data = _read_job_file(args.file)
        except OSError as exc:
            print(f"watcherd: {args.file}: {os_problem(exc)}", file=sys.stderr)
            return 1
        # A dot-name would sit in the inbox unclaimed, as if still being written.
        name = args.name or args.file.name.lstrip(".") or "job.yaml"
        if args.notify:
            print("watcherd: --notify goes with --prompt; put notify: in FILE", file=sys.stderr)
            return 1
    else:
        fields = {
            key: getattr(args, key) for key in SUBMIT_FIELDS if getattr(args, key) is not None
        }
        data = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True).encode()
        name = args.name or "job.yaml"
    try:
        dropped, _spec = submit(config, name, data)
    except (InvalidJob, BadName) as exc:
        print(f"{inbox_name(name) if is_plain_name(name) else name}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        place = exc.filename or Layout(config.root).inbox
        print(f"watcherd: cannot write into {place}: {os_problem(exc)}", file=sys.stderr)
        return 1
    target = dropped.path
    print(target)
    # How to follow it, on stderr: stdout stays the one path programs read.
    handle = job_stem_for_humans(target.name)
    prefix = _command_prefix(args)
    print(
        f"dropped as {target.name}; follow it with\n"
        f"  {prefix} wait {handle}      (until it ends; prints its exit record)\n"
        f"  {prefix} logs -f {handle}   (its commands, edits and messages as they happen)\n"
        f"  {prefix} show {handle}      (its state, summary and files)",
        file=sys.stderr,
    )
    return 0


def job_stem_for_humans(name: str) -> str:
    """``fix-42.yaml`` -> ``fix-42``, which lookup takes too; other names as they are."""
    return name.removesuffix(".yaml") if name.endswith(".yaml") else name


def _command_prefix(args: argparse.Namespace) -> str:
    """``watcherd`` with the --config and --root this command was given."""
    words = ["watcherd"]
    if args.config:
        words += ["--config", str(args.config)]
    if args.root:
        words += ["--root", str(args.root)]
    return shlex.join(words)


def _read_job_file(path: Path) -> bytes:
    """A job file's bytes, at most one more than a job may have: enough for parse_job to
    say it is too big without reading all of a huge file."""
    with path.open("rb") as handle:
        return handle.read(MAX_JOB_BYTES + 1)


def _status(config: Config, args: argparse.Namespace) -> int:
    layout = Layout(config.root)
    counts = {
        folder.name: sum(1 for p in folder.iterdir() if is_job_name(p.name))
        if folder.is_dir()
        else 0
        for folder in (layout.inbox, layout.running, layout.done, layout.failed)
    }
    now = time.time()
    running: list[dict[str, str | int | None]] = []
    if layout.running.is_dir():
        for path in sorted(layout.running.glob("*.yaml")):
            job_id = path.name.removesuffix(".yaml")
            try:
                age = round(now - path.stat().st_ctime)  # ctime: the claim (rename)
            except FileNotFoundError:
                continue  # it finished just now
            progress = read_progress(layout.out_dir(job_id))
            last_at = progress.last_activity_at
            state = readable_run_state(layout, job_id)
            running.append({
                "job_id": job_id,
                "name": dropped_name(layout, job_id, Place.RUNNING),
                "age_seconds": age,
                "last_activity": progress.last_activity,
                "last_activity_age_seconds": None if last_at is None else round(now - last_at),
                "tokens": progress.tokens,
                "waiting": state.waiting or None if state else None,
                "prepared": bool(state and state.prepared),
            })  # fmt: skip
    if args.json:
        print(json.dumps({"counts": counts, "running": running}))
        return 0
    print("  ".join(f"{name}: {count}" for name, count in counts.items()))
    for job in running:
        print(_running_line(job))
    return 0


def _running_line(job: dict[str, str | int | None]) -> str:
    """``running  <id>  fix-42.yaml  2m05s  72 tokens  last: ran pytest (exit 0), 3s ago``"""
    name = one_line(job["name"], 120) if job["name"] else "(name: daemon's user only)"
    parts = ["prepared" if job["prepared"] else "running ", str(job["job_id"]), name]
    parts.append(age_text(float(job["age_seconds"] or 0)))
    if job["prepared"]:
        parts.append("made ready, waits for a slot")
    if job["waiting"]:
        parts.append(f"waiting for a place: {one_line(job['waiting'], 200)}")
    if job["tokens"] is not None:
        parts.append(f"{int(job['tokens']):,} tokens")
    if job["last_activity"]:
        ago = job["last_activity_age_seconds"]
        parts.append(f"last: {job['last_activity']}" + (f", {age_text(float(ago))} ago"
                                                         if ago is not None else ""))  # fmt: skip
    return "  ".join(parts)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _find(config: Config, query: str) -> JobRef | None:
    """The job a NAME|ID argument means, or None after saying there is none."""
    try:
        return find_job(Layout(config.root), query)
    except NoSuchJob as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return None


def _wait(config: Config, args: argparse.Namespace) -> int:
    ref = _find(config, args.job)
    if ref is None:
        return WaitExit.UNKNOWN
    try:
        result = wait_for_end(Layout(config.root), ref, args.timeout)
    except KeyboardInterrupt:
        return 130
    if isinstance(result, Ended):
        print(json.dumps(result.record, indent=2, sort_keys=True))
        return result.exit_code
    place = where(result.ref)
    if isinstance(result, NotYet):
        print(f"watcherd: {place} has not ended after {args.timeout:g}s", file=sys.stderr)
        return WaitExit.WAIT_TIMEOUT
    print(f"watcherd: {place} is gone (removed before it was claimed?)", file=sys.stderr)
    return WaitExit.UNKNOWN


def _show(config: Config, args: argparse.Namespace) -> int:
    ref = _find(config, args.job)
    if ref is None:
        return WaitExit.UNKNOWN
    view = view_job(Layout(config.root), config, ref)
    if args.json:
        print(json.dumps(view.to_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(describe(view)))
    return 0


def _logs(config: Config, args: argparse.Namespace) -> int:
    ref = _find(config, args.job)
    if ref is None:
        return WaitExit.UNKNOWN
    layout = Layout(config.root)
    sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]  # any terminal
    if args.follow:
        if ref.job_id is None:
            print(f"{where(ref)}: waiting for the daemon to claim it", file=sys.stderr)
        try:
            result = follow_logs(layout, ref, lambda line: print(line, flush=True))
        except KeyboardInterrupt:
            return 130
        if isinstance(result, Ended):
            return result.exit_code
        print(f"watcherd: {where(result.ref)} is gone", file=sys.stderr)
        return WaitExit.UNKNOWN
    if ref.job_id is None:
        print(f"{where(ref)}: no events yet", file=sys.stderr)
        return 0
    for line in render(read_all_events(layout.out_dir(ref.job_id) / "events.jsonl")):
        print(line)
    return 0


def _cancel(config: Config, args: argparse.Namespace) -> int:
    layout = Layout(config.root)
    try:
        result = cancel_job(layout, args.job, by=f"{getpass.getuser()} (cli)")
    except OSError as exc:
        print(f"watcherd: cannot write the request: {os_problem(exc)}", file=sys.stderr)
        return 1
    if result.answer is CancelAnswer.UNKNOWN:
        _find(config, args.job)  # says how to name a job
        return WaitExit.UNKNOWN
    print(f"watcherd: {result.message}", file=sys.stderr)
    if result.answer is CancelAnswer.ENDED:
        return 0 if result.state == "cancelled" else 1
    if args.no_wait:
        return 0
    assert result.ref is not None
    try:
        ended = wait_for_end(layout, result.ref, args.timeout)
    except KeyboardInterrupt:
        return 130
    if isinstance(ended, Ended):
        print(json.dumps(ended.record, indent=2, sort_keys=True))
        return 0 if ended.record.get("state") == "cancelled" else 1
    if isinstance(ended, NotYet):
        print(f"watcherd: not ended after {args.timeout:g}s; the request stays on disk for "
              "the daemon that owns the job (is one running?)", file=sys.stderr)  # fmt: skip
        return WaitExit.WAIT_TIMEOUT
    return WaitExit.UNKNOWN


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
            print(f"{path}: {os_problem(exc)}", file=sys.stderr)
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
        print(f"watcherd: {exc.filename or config.root}: {os_problem(exc)}", file=sys.stderr)
        return 1
    print(target)
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from watcherd.web.app import run_server
    from watcherd.web.tokens import TokenFileError

    settings = dataclasses.replace(
        config.serve,
        host=args.host or config.serve.host,
        port=config.serve.port if args.port is None else args.port,
    )
    try:
        asyncio.run(run_server(dataclasses.replace(config, serve=settings)))
    except TokenFileError as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"watcherd: cannot listen on {settings.host}:{settings.port}: "
              f"{os_problem(exc)}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _token_add(config: Config, args: argparse.Namespace) -> int:
    from watcherd.web.app import tokens_path
    from watcherd.web.tokens import TokenFileError, add_token

    path = tokens_path(config)
    try:
        token = add_token(path, args.name, args.scope)
    except (TokenFileError, OSError) as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    print(token)
    print(f"token {args.name!r} ({', '.join(sorted(set(args.scope)))}) stored hashed in {path}; "
          "this is the only time it is shown", file=sys.stderr)  # fmt: skip
    return 0


def _token_list(config: Config, args: argparse.Namespace) -> int:
    from watcherd.web.app import tokens_path
    from watcherd.web.tokens import TokenFileError, read_tokens

    path = tokens_path(config)
    try:
        tokens = read_tokens(path) if path.exists() else ()
    except (TokenFileError, OSError) as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    for token in tokens:
        print(f"{token.name}\t{','.join(sorted(token.scopes))}")
    return 0


def _token_remove(config: Config, args: argparse.Namespace) -> int:
    from watcherd.web.app import tokens_path
    from watcherd.web.tokens import TokenFileError, remove_token

    try:
        removed = remove_token(tokens_path(config), args.name)
    except (TokenFileError, OSError) as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    if not removed:
        print(f"watcherd: no token named {args.name!r}", file=sys.stderr)
        return 1
    return 0


def _publish(config: Config, args: argparse.Namespace) -> int:
    """A request for the daemon, which alone reads the credentials and pushes; then its
    outcome (exit.json's ``publish``) on stdout: exit 0 published or pushed, 1 not."""
    from watcherd.publish import request_publish, wait_for_outcome

    ref = _find(config, args.job)
    if ref is None:
        return WaitExit.UNKNOWN
    if ref.job_id is None or not ref.place.finished:
        print(f"watcherd: {where(ref)} has not ended; publish it once it has", file=sys.stderr)
        return 1
    # Without --as: as it was published before, else the job's own way, else a draft; and a
    # pull request a person made ready (or draft) since stays so.
    mode = args.mode
    try:
        request = request_publish(config, ref.job_id, mode)
    except OSError as exc:
        print(f"watcherd: cannot ask the daemon ({exc.filename or config.root}: "
              f"{os_problem(exc)}); run this as the daemon's user", file=sys.stderr)  # fmt: skip
        return 1
    if args.no_wait:
        how = mode or "the job asks"
        print(f"watcherd: asked the daemon to publish job {ref.job_id} ({how})", file=sys.stderr)
        return 0
    try:
        outcome = wait_for_outcome(config.root, ref.job_id, request.nonce, args.timeout)
    except KeyboardInterrupt:
        return 130
    if outcome is None:
        print(f"watcherd: no outcome after {args.timeout:g}s; is the daemon running? (the "
              "request stays: it publishes when it runs)", file=sys.stderr)  # fmt: skip
        return WaitExit.WAIT_TIMEOUT
    print(json.dumps(outcome, indent=2, sort_keys=True))
    state = outcome.get("state")
    target = outcome.get("url") or outcome.get("branch") or ""
    said = (
        f"{state}: {target}"
        if state in ("published", "pushed")
        else f"{state}: {outcome.get('reason')}"
    )
    print(f"watcherd: job {ref.job_id} {one_line(said, 400)}", file=sys.stderr)
    return 0 if state in ("published", "pushed") else 1


def _doctor(config: Config, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from watcherd.cli.doctor import DockerEngine, format_checks, run_checks
    from watcherd.job.image import ImageError, image_dir

    try:
        dockerfile: Path | None = image_dir(config) / "Dockerfile"
    except ImageError:
        dockerfile = None
    checks = run_checks(
        config, lambda: DockerEngine(config.docker_host), datetime.now(UTC), dockerfile
    )
    print("\n".join(format_checks(checks)))
    return 0 if all(check.ok for check in checks) else 1


def _image_build(config: Config, args: argparse.Namespace) -> int:
    from watcherd.agents import AGENTS
    from watcherd.job.image import ImageError, build_image

    agents = args.agents or [config.default_agent]
    if agents == ["all"]:
        agents = sorted(AGENTS)
    if args.tag and len(agents) > 1:
        print("watcherd: --tag names one image: build one agent at a time", file=sys.stderr)
        return 2
    try:
        for agent in agents:
            build_image(config, ca_certs=args.ca_cert, tag=args.tag, agent=agent)
    except ImageError as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    return 0


def _mcp(config: Config, args: argparse.Namespace) -> int:
    # Lazily: the SDK and its dependencies load only for this command.
    from watcherd.mcp.server import serve

    serve(config, read_only=args.read_only)
    return 0


def _relay(config: Config, args: argparse.Namespace) -> int:
    from watcherd.config.relay import parse_address
    from watcherd.relay.credential import CredentialError, client_context
    from watcherd.relay.node import run_relay

    try:
        address = parse_address(args.connect) if args.connect else config.relay.listen
    except ValueError as exc:
        print(f"watcherd: --connect: {exc}", file=sys.stderr)
        return 2
    if address is None or address[0] in ("0.0.0.0", "::", ""):
        print("watcherd: relay: give --connect HOST:PORT, the daemon's address (the config's "
              "relay.listen names no single host)", file=sys.stderr)  # fmt: skip
        return 2
    credential = args.credential or config.relay.credential_in(Layout(config.root).state)
    try:
        context = client_context(credential)
    except CredentialError as exc:
        print(f"watcherd: relay: {exc}", file=sys.stderr)
        return 2
    run_relay(address, context, args.sockets_dir or config.relay.sockets_dir)
    return 0


def _skill_install(config: Config, args: argparse.Namespace) -> int:
    from watcherd.cli.skill import SkillError, install_skill

    try:
        target = install_skill(args.dir)
    except SkillError as exc:
        print(f"watcherd: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


def _login(config: Config, args: argparse.Namespace) -> int:
    from watcherd.job.image import login

    return login(config, with_api_key=args.with_api_key)


if __name__ == "__main__":
    sys.exit(main())
