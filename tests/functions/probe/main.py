# Isolation probe for the end-to-end tests: reports what the function can see and do
# inside its container. Every attempt is recorded as {"ok": bool, "error": "ErrnoName: msg"}
# (plus what it got on success), so the test can assert each one and print all of them.
#
# Arguments: "secret" (a host file the function must not read), "state_dir" (the worker's
# state directory on the host), "grpc_port" (the worker's gRPC port on the host loopback).
import errno
import os
import socket


def _attempt(fn):
    try:
        got = fn()
        return {"ok": True, "got": got}
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno is not None else type(e).__name__
        return {"ok": False, "error": "%s: %s" % (name, e.strerror or e)}
    except Exception as e:  # socket.timeout and the like
        return {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}


def _read(path):
    with open(path, "rb") as f:
        return len(f.read())


def _write(path):
    with open(path, "w") as f:
        f.write("probe")
    return os.path.getsize(path)


def _udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(2)
        s.connect((host, port))
        return s.send(b"\x00" * 12)
    finally:
        s.close()


def _tcp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect((host, port))
        return "connected"
    finally:
        s.close()


def _mounts():
    # mount point -> options, from this mount namespace's view.
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            out[fields[4]] = fields[5]
    return out


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    return None


def _interfaces():
    # The network interfaces and the interfaces that have a route (a fresh netns has only "lo", down).
    names = [n for _, n in socket.if_nameindex()]
    with open("/proc/net/route") as f:
        routes = [line.split()[0] for line in f.readlines()[1:] if line.strip()]
    return {"names": names, "routes": routes}


def main(args):
    secret = args.get("secret", "/nonexistent-secret")
    state_dir = args.get("state_dir", "/nonexistent-state")
    port = int(args.get("grpc_port", 1))
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "pid": os.getpid(),
        "pids": pids,
        "cap_eff": _status("CapEff"),
        "no_new_privs": _status("NoNewPrivs"),
        "hostname": socket.gethostname(),
        "mounts": _mounts(),
        "list_root": _attempt(lambda: os.listdir("/root")),
        "read_root_bashrc": _attempt(lambda: _read("/root/.bashrc")),
        "read_shadow": _attempt(lambda: _read("/etc/shadow")),
        "list_state_dir": _attempt(lambda: os.listdir(state_dir)),
        "read_secret": _attempt(lambda: _read(secret)),
        "write_root": _attempt(lambda: _write("/probe.txt")),
        "write_usr": _attempt(lambda: _write("/usr/x")),
        "write_function": _attempt(lambda: _write("/function/x")),
        "write_agent": _attempt(lambda: _write("/iluvatar/agent/x")),
        "write_tmp": _attempt(lambda: _write("/tmp/x")),
        "interfaces": _attempt(_interfaces),
        "udp_internet": _attempt(lambda: _udp("1.1.1.1", 53)),
        "tcp_internet": _attempt(lambda: _tcp("1.1.1.1", 53)),
        "tcp_worker": _attempt(lambda: _tcp("127.0.0.1", port)),
    }
