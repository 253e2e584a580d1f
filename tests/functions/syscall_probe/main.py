# Syscall probe for the end-to-end tests: tries each call a container's seccomp profile should
# deny, each in a forked child (a call that succeeds cannot change the agent), and reports
# "ok" or the errno's name for each, by name. Also reports the calls a function needs (threads,
# fork) and its supplementary groups. x86_64 call numbers.
import ctypes
import errno
import os
import threading

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17


def _raw(nr, *args):
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return r, ctypes.get_errno()


def _clone3_args():
    # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
    # tls (8 x u64, 64 bytes: CLONE_ARGS_SIZE_VER0).
    buf = (ctypes.c_uint64 * 8)(CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0)
    return buf


_keep = []


def _probes():
    c3 = _clone3_args()
    _keep.append(c3)
    return {
        "unshare_user": (272, CLONE_NEWUSER),
        "unshare_mount": (272, CLONE_NEWNS),
        "unshare_net": (272, CLONE_NEWNET),
        "clone_newuser": (56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
        "clone3_newuser": (435, ctypes.addressof(c3), 64),
        "setns": (308, 0, 0),
        "mount": (165, 0, 0, 0, 0, 0),
        "umount2": (166, 0, 0),
        "pivot_root": (155, 0, 0),
        "keyctl": (250, 0, -3, 0),
        "add_key": (248, 0, 0, 0, 0, -3),
        "request_key": (249, 0, 0, 0, 0),
        "bpf": (321, 0, 0, 0),
        "perf_event_open": (298, 0, 0, -1, -1, 0),
        "ptrace": (101, 0, 0, 0, 0),
        "process_vm_readv": (310, os.getpid(), 0, 0, 0, 0, 0),
        "userfaultfd": (323, 1),
        "io_uring_setup": (425, 1, 0),
        "init_module": (175, 0, 0, 0),
        "finit_module": (313, -1, 0, 0),
        "delete_module": (176, 0, 0),
        "kexec_load": (246, 0, 0, 0, 0),
        "kexec_file_load": (320, -1, -1, 0, 0, 0),
        "reboot": (169, 0, 0, 0, 0),
        "x32_getpid": (0x40000000 | 39,),
    }


def _in_child(nr, args):
    """Runs one call in a forked child; returns "ok" or the errno's name."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            ret, err = _raw(nr, *args)
            if ret == 0 and nr in (56, 435):
                os._exit(0)  # The clone's child: gone at once (its parent reports).
            out = "ok" if ret >= 0 else errno.errorcode.get(err, str(err))
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode() or "no answer"
    os.waitpid(pid, 0)
    # A clone that worked leaves a child of the forked process: reaped by the container's init.
    return out


def main(args):
    calls = {name: _in_child(spec[0], spec[1:]) for name, spec in _probes().items()}
    box = []
    t = threading.Thread(target=lambda: box.append("ran"))
    t.start()
    t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    return {
        "calls": calls,
        "thread": box == ["ran"],
        "fork": os.WEXITSTATUS(status) == 7,
        "groups": sorted(os.getgroups()),
        "gid": os.getgid(),
    }
