"""systemd's MemoryDenyWriteExecute=yes, applied to this process, for tests.

systemd 252 implements it as a seccomp filter (seccomp_memory_deny_write_execute() in
its src/shared/seccomp-util.c); this is the same filter for x86-64, written out in BPF
so that no libseccomp is needed: these calls fail with EPERM,

- mmap with PROT_WRITE and PROT_EXEC together,
- mprotect and pkey_mprotect with PROT_EXEC (systemd refuses making anything
  executable after the fact, not only writable memory),
- shmat with SHM_EXEC.

The filter stays for the life of the process and across execve, like the unit's.
"""

from __future__ import annotations

import ctypes
import platform

AUDIT_ARCH_X86_64 = 0xC000003E
SYS_MMAP, SYS_MPROTECT, SYS_SHMAT, SYS_PKEY_MPROTECT = 9, 10, 30, 329
PROT_EXEC, PROT_WRITE, SHM_EXEC = 0x4, 0x2, 0o100000
EPERM = 1

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG2_LOW = 0, 4, 16 + 2 * 8  # little-endian: low half first

LD_ABS, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, ALU|AND|K, RET|K
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | EPERM
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_NO_NEW_PRIVS = 22, 2, 38


class _Instruction(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction)))


# (code, jump if true, jump if false, k); jumps count the instructions to skip.
_PROGRAM = (
    (LD_ABS, 0, 0, OFFSET_ARCH),  # 0
    (JEQ, 0, 14, AUDIT_ARCH_X86_64),  # 1: another ABI → 16 (SystemCallArchitectures=)
    (LD_ABS, 0, 0, OFFSET_NR),  # 2
    (JEQ, 3, 0, SYS_MMAP),  # 3 → 7
    (JEQ, 5, 0, SYS_MPROTECT),  # 4 → 10
    (JEQ, 4, 0, SYS_PKEY_MPROTECT),  # 5 → 10
    (JEQ, 6, 9, SYS_SHMAT),  # 6 → 13, else 16
    (LD_ABS, 0, 0, OFFSET_ARG2_LOW),  # 7: mmap's prot
    (AND, 0, 0, PROT_WRITE | PROT_EXEC),  # 8
    (JEQ, 7, 6, PROT_WRITE | PROT_EXEC),  # 9 → 17, else 16
    (LD_ABS, 0, 0, OFFSET_ARG2_LOW),  # 10: mprotect's prot
    (AND, 0, 0, PROT_EXEC),  # 11
    (JEQ, 4, 3, PROT_EXEC),  # 12 → 17, else 16
    (LD_ABS, 0, 0, OFFSET_ARG2_LOW),  # 13: shmat's flags
    (AND, 0, 0, SHM_EXEC),  # 14
    (JEQ, 1, 0, SHM_EXEC),  # 15 → 17, else 16
    (RET, 0, 0, RET_ALLOW),  # 16
    (RET, 0, 0, RET_EPERM),  # 17
)


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() == "x86_64"


def install() -> None:
    """Apply the filter to this process (and what it execs). Irreversible."""
    libc = ctypes.CDLL(None, use_errno=True)
    instructions = (_Instruction * len(_PROGRAM))(*(_Instruction(*i) for i in _PROGRAM))
    program = _Program(len(_PROGRAM), instructions)
    # Without CAP_SYS_ADMIN the kernel takes a filter only with no_new_privs; the unit
    # sets NoNewPrivileges=yes anyway.
    for args in (
        (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(program), 0, 0),
    ):
        if libc.prctl(*(ctypes.c_ulong(a) for a in args)) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed")
