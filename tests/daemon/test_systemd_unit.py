"""systemd/watcherd.service: systemd accepts it, it agrees with the daemon, and its
hardening does not break the daemon (MemoryDenyWriteExecute= checked for real)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import mdwx
from tests.support.helpers import CHECKOUT, TESTS, DaemonProcess, wait_finished, write_job

UNIT = CHECKOUT / "systemd" / "watcherd.service"
HOOKS = TESTS / "support" / "hooks"
StartDaemon = Callable[..., DaemonProcess]


def unit_settings(text: str, section: str = "Service") -> dict[str, list[str]]:
    """``Key=value`` lines of one section; a key may repeat (systemd appends)."""
    settings: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.environ.get("CI") == "true":  # .ci/run installs it: missing there is a failure
        pytest.fail("systemd-analyze not found; .ci/run installs the systemd package")
    pytest.skip("systemd-analyze not found (apt-get install systemd; .ci/run does)")


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this Python and checkout.

    `systemd-analyze verify` fails a unit whose ExecStart binary does not exist, and
    /usr/local/bin/watcherd exists only where watcherd is installed. The arguments and
    every other line stay as shipped.
    """
    text = UNIT.read_text()
    shipped = "ExecStart=/usr/local/bin/watcherd "
    assert text.count(shipped) == 1
    path = tmp_path / "watcherd.service"
    path.write_text(text.replace(shipped, f"ExecStart={sys.executable} -m watcherd.cli "))
    return path


def test_systemd_analyze_verify_accepts_the_unit(
    systemd_analyze: str, checkable_unit: Path
) -> None:
    result = subprocess.run(
        [systemd_analyze, "verify", str(checkable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # It exits 0 even on "Unknown key" or "Failed to parse ..., ignoring" (systemd 252
    # says that for Type=notify-reload): any output at all is a finding.
    assert result.stdout + result.stderr == ""


def test_unit_hardening_stays_ok_by_systemd_analyze_security(
    systemd_analyze: str, checkable_unit: Path
) -> None:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--no-pager", str(checkable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    # 9.6 for a bare unit, 9.0 before this hardening, 4.0 as shipped. Root, the network
    # and the capabilities the daemon needs account for most of what is left.
    assert float(found.group(1)) <= 5.0, result.stdout


def test_unit_matches_what_the_daemon_does() -> None:
    service = unit_settings(UNIT.read_text())
    # READY=1, and the watchdog fed from the main loop (watcherd/sdnotify.py) ...
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] and service["Restart"] == ["on-failure"]
    # ... SIGHUP reloads the config (watcherd/reload.py) ...
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # ... SIGTERM to the daemon alone: containers are not the unit's to kill.
    assert service["KillMode"] == ["mixed"]
    assert service["ExecStart"] == ["/usr/local/bin/watcherd run"]
    assert "/work" in service["ReadWritePaths"]
    assert service["MemoryDenyWriteExecute"] == ["yes"]
    assert set(service["CapabilityBoundingSet"][0].split()) == {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_KILL",
    }


# -- the disk-bound drop-in -----------------------------------------------------------------

DROP_IN = CHECKOUT / "systemd" / "disk-bound.conf"
# What gives a unit a mount namespace of its own (systemd.exec(5), 252): mounts made in it
# reach neither dockerd nor anyone else. Each with the value that does not.
NAMESPACE_SETTINGS = {
    "ReadWritePaths": "", "ReadOnlyPaths": "", "InaccessiblePaths": "", "ExecPaths": "",
    "NoExecPaths": "", "TemporaryFileSystem": "", "BindPaths": "", "BindReadOnlyPaths": "",
    "ProtectSystem": "no", "ProtectHome": "no", "PrivateTmp": "no", "PrivateDevices": "no",
    "PrivateMounts": "no", "ProtectProc": "default", "ProcSubset": "all",
    "ProtectKernelTunables": "no", "ProtectKernelModules": "no", "ProtectKernelLogs": "no",
    "ProtectControlGroups": "no", "ProtectHostname": "no", "MountFlags": "shared",
    "RootDirectory": "", "RootImage": "",
}  # fmt: skip


def test_the_disk_bound_drop_in_lets_the_daemon_mount_where_dockerd_sees_it() -> None:
    unit = unit_settings(UNIT.read_text())
    drop_in = unit_settings(DROP_IN.read_text())
    for key in sorted(set(unit) & set(NAMESPACE_SETTINGS)):
        assert key in drop_in, f"{key}= of the unit would keep a mount namespace"
        assert drop_in[key][-1] == NAMESPACE_SETTINGS[key], key
    assert drop_in["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"]  # added to the unit's
    assert {"/dev/loop-control rw", "block-loop rw"} <= set(drop_in["DeviceAllow"])


def test_systemd_analyze_verify_accepts_the_unit_with_the_drop_in(
    systemd_analyze: str, checkable_unit: Path
) -> None:
    folder = checkable_unit.parent / "watcherd.service.d"
    folder.mkdir()
    (folder / "disk-bound.conf").write_text(DROP_IN.read_text())
    result = subprocess.run(
        [systemd_analyze, "verify", str(checkable_unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
    security = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--no-pager", str(checkable_unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert found and float(found.group(1)) > 5.0  # the drop-in was read: less sandbox


# -- MemoryDenyWriteExecute= -------------------------------------------------------------

needs_x86_64 = pytest.mark.skipif(
    not mdwx.supported(), reason="the filter in tests/support/mdwx.py is written for x86-64"
)

UNDER_MDWX = r"""
import ctypes, mmap, ssl, sys, tempfile, threading, time
from pathlib import Path

# The filter is on: writable+executable memory, and making memory executable, fail.
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("mmap(PROT_WRITE|PROT_EXEC) was allowed: no filter")
except PermissionError:
    pass
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
page = libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE,
                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
if libc.mprotect(ctypes.c_void_p(page), 4096, mmap.PROT_READ | mmap.PROT_EXEC) == 0:
    sys.exit("mprotect(PROT_EXEC) was allowed: no filter")

# What the daemon loads and does, minus Docker.
import watcherd.cli, watcherd.daemon.server, watcherd.job.image, watcherd.backends  # noqa: E401
from watcherd.config import load_config
from watcherd.spool.watch import InboxWatcher

ssl.create_default_context()  # OpenSSL, for a Docker host over TLS and git over https
assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7  # libffi closures
with tempfile.TemporaryDirectory() as folder:
    config = Path(folder, "config.yaml")
    config.write_text("concurrency: 3\n")
    assert load_config(config, environ={}).concurrency == 3  # PyYAML
    woken = threading.Event()
    watcher = InboxWatcher(Path(folder), woken)  # inotify through ctypes
    watcher.start()
    Path(folder, "job.yaml").write_text("x")
    assert woken.wait(10), "no inotify event"
    watcher.stop()
print("ok")
"""


@needs_x86_64
def test_python_and_the_daemon_code_work_under_memory_deny_write_execute() -> None:
    hooks_first = os.pathsep.join([str(HOOKS), str(CHECKOUT)])
    result = subprocess.run(
        [sys.executable, "-c", UNDER_MDWX],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"PYTHONPATH": hooks_first, "WATCHERD_TEST_MDWX": "1"},
    )
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr


def seccomp_filters(pid: int | str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Seccomp_filters:\s*(\d+)", status, re.MULTILINE)
    assert found, "kernel without seccomp filters"
    return int(found.group(1))


@needs_x86_64
@pytest.mark.docker
def test_daemon_runs_a_job_under_memory_deny_write_execute(
    work_root: Path, start_daemon: StartDaemon, repo_url: str
) -> None:
    daemon = start_daemon(env={"PYTHONPATH": str(HOOKS), "WATCHERD_TEST_MDWX": "1"})
    assert daemon.proc is not None
    assert seccomp_filters(daemon.proc.pid) == seccomp_filters("self") + 1
    write_job(
        work_root / "inbox",
        "ok.yaml",
        repo_url=repo_url,
        prompt="succeed",
    )
    assert wait_finished(work_root, "ok.yaml")[0] == "done"
    assert daemon.stop() == 0


@pytest.mark.parametrize("command", ["serve", "relay"])
def test_the_serve_and_relay_units_are_accepted_and_hold_no_capability(
    systemd_analyze: str, tmp_path: Path, command: str
) -> None:
    shipped = CHECKOUT / "systemd" / f"watcherd-{command}.service"
    text = shipped.read_text()
    assert text.count(f"ExecStart=/usr/local/bin/watcherd {command}") == 1
    path = tmp_path / f"watcherd-{command}.service"
    path.write_text(text.replace("ExecStart=/usr/local/bin/watcherd ",
                                 f"ExecStart={sys.executable} -m watcherd.cli "))  # fmt: skip
    result = subprocess.run([systemd_analyze, "verify", str(path)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
    service = unit_settings(text)
    assert service["CapabilityBoundingSet"] == [""]
    assert service["NoNewPrivileges"] == ["yes"] and service["ProtectSystem"] == ["strict"]
