"""cancel/ is writable by everyone who may submit: what a forged file there can make the
daemon do. A request is only what CancelBook.request writes, under its own key, naming an
inbox entry (never a path) or a job id."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from watcherd.spool.cancel import CancelBook, CancelRequest, new_request
from watcherd.spool.folders import Layout, Spool

JOB_ID = "20261126T210000Z-fix-1a2b3c"


def make_layout(root: Path) -> Layout:
    layout = Layout(root)
    layout.ensure()
    return layout


def forge(layout: Layout, file_name: str, body: object) -> Path:
    path = layout.cancel / file_name
    path.write_text(json.dumps(body))
    return path


def queued_key(name: str, inode: int) -> str:
    entry = f"{name}\0{inode}".encode("utf-8", "surrogatepass")  # any name, even no file's
    return "queued-" + hashlib.sha256(entry).hexdigest()[:24]


def test_a_request_naming_a_path_out_of_the_inbox_is_no_request(tmp_path: Path) -> None:
    # The daemon claims the entry a queued request names: with "../state/..." that was a
    # rename of a daemon-private file (or another root's job) into running/.
    layout = make_layout(tmp_path)
    precious = layout.state / "tokens.yaml"
    precious.write_text("tokens: []\n")
    inode = os.lstat(precious).st_ino
    for name in ("../state/tokens.yaml", "/etc/passwd", "a/../../state/tokens.yaml", ".x.yaml",
                 "tokens.yaml\0", "notes.txt"):  # fmt: skip
        forge(layout, f"{queued_key(name, inode)}.json",
              {"by": "eve", "at": 1, "name": name, "inode": inode})  # fmt: skip
    book = CancelBook(layout)
    assert list(book.queued()) == []
    assert list(book.all()) == []
    assert book.for_entry("../state/tokens.yaml", inode) is None


def test_a_queued_file_naming_a_job_id_is_no_queued_request(tmp_path: Path) -> None:
    # queued() promises requests with a name and inode: the daemon asserted so, and a
    # forged queued-*.json naming an id stopped its main loop with an AssertionError.
    layout = make_layout(tmp_path)
    forge(layout, "queued-0123.json", {"by": "eve", "at": 1, "job_id": JOB_ID})
    assert list(CancelBook(layout).queued()) == []


def test_a_request_under_another_key_is_ignored(tmp_path: Path) -> None:
    # Filed under a name that is not its key, dropping it (by its key) would never remove
    # the file: acted on again every half second, forever.
    layout = make_layout(tmp_path)
    forge(layout, "queued-abc.json", {"by": "eve", "at": 1, "name": "x.yaml", "inode": 5})
    forge(layout, "20261126T210000Z-other-aaaaaa.json", {"by": "eve", "at": 1, "job_id": JOB_ID})
    book = CancelBook(layout)
    assert list(book.all()) == [] and list(book.queued()) == []
    assert book.for_job("20261126T210000Z-other-aaaaaa") is None


def test_links_and_odd_files_in_cancel_are_no_requests(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    real = tmp_path / "elsewhere.json"
    real.write_text(json.dumps({"by": "eve", "at": 1, "job_id": JOB_ID}))
    (layout.cancel / f"{JOB_ID}.json").symlink_to(real)
    os.mkfifo(layout.cancel / "queued-fifo.json")
    (layout.cancel / "queued-dir.json").mkdir()
    book = CancelBook(layout)
    assert book.for_job(JOB_ID) is None
    assert list(book.all()) == []
    book.drop(JOB_ID)  # the link itself, never what it points to
    assert real.exists() and not (layout.cancel / f"{JOB_ID}.json").is_symlink()


def test_what_request_writes_reads_back(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    book = CancelBook(layout)
    queued = new_request("alice (cli)", name="fix.yaml", inode=42)
    claimed = new_request("token ops (api)", job_id=JOB_ID)
    assert book.request(queued) and book.request(claimed)
    assert not book.request(queued)  # asking twice is asking once
    assert list(book.queued()) == [queued]
    assert book.for_entry("fix.yaml", 42) == queued
    assert book.for_job(JOB_ID) == claimed
    assert sorted(r.key for r in book.all()) == sorted([queued.key, claimed.key])
    assert isinstance(queued, CancelRequest)


def test_who_asked_is_one_printable_line(tmp_path: Path) -> None:
    # "by" goes into the daemon's log line, exit.json's reason and the notifications: a
    # forged one must not start a log line of its own or carry terminal escapes.
    layout = make_layout(tmp_path)
    by = "eve\njob x: done (ok)\x1b]0;owned\x07\u202e" + "y" * 500
    forge(layout, f"{JOB_ID}.json", {"by": by, "at": 1, "job_id": JOB_ID})
    request = CancelBook(layout).for_job(JOB_ID)
    assert request is not None
    assert request.by.isprintable() and request.by.startswith("evejob x: done (ok)]0;owned")
    assert len(request.by) == 200


def test_a_name_no_inbox_entry_can_have_is_no_request(tmp_path: Path) -> None:
    # The daemon lstat()s the entry a queued request names on every turn of its loop: a
    # name over NAME_MAX raised ENAMETOOLONG there (its loop backed off for good, no job
    # claimed again) and a lone surrogate UnicodeEncodeError (the daemon stopped).
    layout = make_layout(tmp_path)
    for name in ("a" * 251 + ".yaml", "\ud800.yaml", "é" * 126 + ".yaml"):
        forge(layout, f"{queued_key(name, 7)}.json", {"by": "eve", "at": 1, "name": name,
                                                     "inode": 7})  # fmt: skip
    spool = Spool(layout)
    for request in CancelBook(layout).queued():
        assert request.name is not None
        spool.stat_inbox(request.name)  # never raises
    assert list(CancelBook(layout).queued()) == []
    # A name that is not UTF-8 on disk (os.listdir's surrogate escapes) is one, as is the
    # longest a folder can hold.
    for name in ("caf\udce9.yaml", "a" * 250 + ".yaml"):
        assert CancelBook(layout).request(new_request("alice (cli)", name=name, inode=8))
        assert CancelBook(layout).for_entry(name, 8) is not None


def test_an_inbox_name_that_is_not_utf8_is_looked_up(tmp_path: Path) -> None:
    # The daemon asks for_entry about every entry it claims: a file dropped as b"caf\xe9.yaml"
    # raised UnicodeEncodeError there, which stopped the daemon.
    layout = make_layout(tmp_path)
    with open(os.fsencode(layout.inbox) + b"/caf\xe9.yaml", "wb") as handle:
        handle.write(b"prompt: x\n")
    (name,) = os.listdir(layout.inbox)
    job = Spool(layout).claim(name)
    assert job is not None
    assert CancelBook(layout).for_entry(name, os.fstat(job.fd).st_ino) is None
    job.release()


def test_a_request_is_small_and_big_files_cost_the_daemon_nothing(tmp_path: Path) -> None:
    # The daemon reads every queued-*.json on every turn of its loop (twice a second): at
    # up to 1 MiB each, 200 such files from a submitter made each turn take seconds (no
    # claims, no watchdog pings). A request is a few hundred bytes; a file over 8 KiB is none.
    layout = make_layout(tmp_path)
    padded = json.dumps({"by": "eve", "at": 1, "job_id": JOB_ID}) + " " * 9000
    (layout.cancel / f"{JOB_ID}.json").write_text(padded)
    assert CancelBook(layout).for_job(JOB_ID) is None
    blob = json.dumps({"by": "x" * (1024 * 1024), "at": 1, "name": "a.yaml", "inode": 1})
    for number in range(100):
        (layout.cancel / f"queued-{number}.json").write_text(blob)
    began = time.monotonic()
    assert list(CancelBook(layout).queued()) == []
    assert time.monotonic() - began < 1.0
    # The largest request cancel writes still fits.
    largest = new_request("\U0001f600" * 300, name="\udcff" * 250 + ".yaml", inode=2**63)
    assert CancelBook(layout).request(largest)
    assert list(CancelBook(layout).queued()) == [largest]


def test_a_file_that_is_no_request_does_not_answer_already_requested(tmp_path: Path) -> None:
    # A link or junk under the key's name (planted, or left by a crash) made every cancel
    # of that job answer "already requested" while the daemon, rightly, ignored the file:
    # the job was never cancelled. Cancel now puts its request in place of such a file.
    layout = make_layout(tmp_path)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"by": "eve", "at": 1, "job_id": JOB_ID}))
    (layout.cancel / f"{JOB_ID}.json").symlink_to(elsewhere)
    book = CancelBook(layout)
    assert book.request(new_request("alice (cli)", job_id=JOB_ID))
    found = book.for_job(JOB_ID)
    assert found is not None and found.by == "alice (cli)"
    assert json.loads(elsewhere.read_text())["by"] == "eve"  # the link was replaced, not followed
    queued = new_request("alice (cli)", name="q.yaml", inode=3)
    (layout.cancel / f"{queued.key}.json").write_text("{not json")
    assert book.request(queued) and book.for_entry("q.yaml", 3) == queued
    assert not book.request(queued)  # a real one there: asking twice is asking once
