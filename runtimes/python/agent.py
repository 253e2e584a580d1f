# In-container agent for Ilúvatar Python functions: imports main.py once, then serves invocations over a Unix socket.
#
# Protocol (one JSON object per '\n'-terminated UTF-8 line, each direction):
#   request:  {"args": {...}, "tid": "..."}
#   response: {"ok": true, "result": <value>, "start_us": int, "end_us": int, "first_call": bool}
#          or {"ok": false, "error": {"kind", "message", "traceback"}, "start_us", "end_us", "first_call"}
# Responses travel only over the socket, so whatever the function prints to stdout cannot corrupt them.
# Exit codes: 0 on SIGTERM/SIGINT, 2 bad configuration, 3 the function failed to import, 4 cannot listen.
import _thread
import importlib.machinery
import json
import os
import signal
import socket
import sys
import time
import types

# traceback and importlib.util are not imported: they cost milliseconds of every cold start
# (traceback is imported when an error needs formatting).

_AGENT_FILE = os.path.abspath(__file__)
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # NaN/Infinity are not JSON; Rust's serde rejects them
_socket_path = None  # final socket path once we own it, so SIGTERM can remove it
_socket_ino = None
_TERM_SIGNALS = (int(signal.SIGTERM), int(signal.SIGINT))


def _log(event, **fields):
    # stderr only: stdout belongs to the function's own output (the worker sends it to a log file).
    sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stderr.flush()


def _format_tb(exc):
    # Drop the agent's and importlib's leading frames: the user cares about their own code.
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name != _AGENT_FILE and not name.startswith("<frozen"):
            break
        tb = tb.tb_next
    import traceback  # only on errors: importing it costs milliseconds at start

    return "".join(traceback.format_exception(type(exc), exc, tb))


def _safe_str(exc):
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not take the agent down
        return "<unprintable %s>" % type(exc).__name__


def _error(kind, message, tb=""):
    return {"kind": kind, "message": message, "traceback": tb}


def _exit_on_term():
    # os._exit (not SystemExit) so that no `except BaseException` in the function can swallow it.
    try:
        if _socket_path is not None and os.stat(_socket_path).st_ino == _socket_ino:
            os.unlink(_socket_path)  # a stale socket would look like a live agent to the next container
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(0)


def _on_term(signum, frame):
    _exit_on_term()


def _watch_for_term(wakeup):
    # CPython runs a Python-level handler between bytecodes only, so a SIGTERM that lands after the
    # last check and before a blocking recv/accept would be taken by the C handler and the agent
    # would sleep on in recv, never exiting. The C handler also writes the signal's number to the
    # wakeup fd, and this thread, blocked reading it, exits for the main thread. Other signals a
    # function handles itself land here too, and are skipped.
    while True:
        try:
            got = os.read(wakeup, 64)
        except InterruptedError:
            continue
        if not got:
            return
        if any(b in _TERM_SIGNALS for b in got):
            _exit_on_term()


def _install_term_handlers():
    # As PID 1 in a container, a signal without a handler is ignored, so we must exit ourselves.
    # The signal mask is left alone, so the function's own child processes start with the usual one.
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    r, w = os.pipe()  # close-on-exec, so the function's children do not inherit it
    os.set_blocking(w, False)  # the C handler must never block on it
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    _thread.start_new_thread(_watch_for_term, (r,))  # _thread, not threading: no import cost at start


def _add_dependencies():
    # The function's dependency layer (its requirements.txt, installed by the worker), if it has
    # one. It goes after the standard library and before the host's own site directories, so that
    # the function's versions win over packages the host happens to have, never over the standard
    # library. site.addsitedir also reads the layer's .pth files, as pip's --target layout expects.
    deps = os.environ.get("ILUVATAR_DEPS_DIR", "")
    if not deps:
        return
    if not os.path.isdir(deps):
        raise ModuleNotFoundError("the dependency layer %r is missing" % deps)
    import site

    before = len(sys.path)
    site.addsitedir(deps)
    added = sys.path[before:]
    del sys.path[before:]
    at = next((i for i, p in enumerate(sys.path) if p.endswith(("site-packages", "dist-packages"))), len(sys.path))
    sys.path[at:at] = added


def _import_function(fdir):
    path = os.path.join(fdir, "main.py")
    if not os.path.isfile(path):
        raise ModuleNotFoundError("no main.py in function directory %r" % fdir, name="main")
    _add_dependencies()
    sys.path.insert(0, fdir)  # so the function can import its sibling modules
    loader = importlib.machinery.SourceFileLoader("main", path)
    module = types.ModuleType("main")
    module.__file__ = path
    module.__loader__ = loader
    sys.modules["main"] = module  # register before exec, as a normal import does
    loader.exec_module(module)
    fn = getattr(module, "main", None)
    if not callable(fn):
        raise AttributeError("main.py defines no callable 'main' (found %s)" % type(fn).__name__)
    return fn


def _listen(path):
    # Bind and listen on a temporary name, then rename: the final path only ever names a socket
    # that already accepts connections, so the worker can connect as soon as it sees the path.
    tmp = "%s.tmp-%d" % (path, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(tmp)
    srv.listen(16)
    os.rename(tmp, path)  # atomically replaces a stale socket left by a previous agent
    return srv


def _handle(fn, line, state):
    # Returns the response line (bytes). `state` is a one-element list: [calls made so far].
    try:
        req = json.loads(line)
        if not isinstance(req, dict) or not isinstance(req.get("args"), dict):
            raise ValueError("request must be a JSON object with an object 'args'")
    except (ValueError, RecursionError) as e:  # JSONDecodeError/UnicodeDecodeError are ValueErrors; deep nesting recurses
        now = time.time_ns() // 1000
        # first_call stays false and the counter untouched: main was not called.
        body = {"ok": False, "error": _error("BadRequest", _safe_str(e)),
                "start_us": now, "end_us": now, "first_call": False}
        return _dumps(body).encode() + b"\n"

    first = state[0] == 0
    state[0] += 1
    start = time.time_ns() // 1000
    try:
        result = fn(req["args"])
        end = time.time_ns() // 1000
    except BaseException as e:  # includes SystemExit: a function calling sys.exit() must not kill a warm container
        end = time.time_ns() // 1000
        err = _error(type(e).__name__, _safe_str(e), _format_tb(e))
    else:
        try:
            # Serialise the result alone so a bad value is reported instead of breaking the line.
            rj = _dumps(result)
            return ('{"ok":true,"result":%s,"start_us":%d,"end_us":%d,"first_call":%s}\n'
                    % (rj, start, end, "true" if first else "false")).encode()
        except Exception as e:  # TypeError, ValueError (NaN, cycles), RecursionError...
            err = _error("NonJsonResult", "main returned a value of type %s that is not JSON-serialisable: %s"
                         % (type(result).__name__, _safe_str(e)))
    body = {"ok": False, "error": err, "start_us": start, "end_us": end, "first_call": first}
    return _dumps(body).encode() + b"\n"


def _serve(srv, fn, conn=None):
    state = [0]
    while True:  # one connection at a time; the worker may reconnect after a drop
        if conn is None:
            conn, _ = srv.accept()
        reader = conn.makefile("rb")
        try:
            while True:
                line = reader.readline()
                if not line:
                    break  # peer closed: go back to accept
                conn.sendall(_handle(fn, line, state))
        except OSError:
            pass  # reset/broken pipe: the worker went away mid-call; wait for the next one
        finally:
            reader.close()
            conn.close()
            conn = None


def main():
    global _socket_path, _socket_ino
    # Install first so that a SIGTERM during a slow import is also a clean, prompt exit.
    _install_term_handlers()

    sock_path = os.environ.get("ILUVATAR_SOCKET", "")
    fdir = os.environ.get("ILUVATAR_FUNCTION_DIR", "")
    if not os.path.isabs(sock_path) or not fdir:
        _log("config_error", message="ILUVATAR_SOCKET must be an absolute path and ILUVATAR_FUNCTION_DIR set",
             socket=sock_path, function_dir=fdir)
        sys.exit(2)

    if os.environ.get("ILUVATAR_STANDBY") == "1":
        _standby(sock_path, fdir)
    t0 = time.perf_counter()
    try:
        fn = _import_function(os.path.abspath(fdir))
    except BaseException as e:  # SyntaxError, SystemExit at import, ... all mean "cannot serve"
        _log("import_error", kind=type(e).__name__, message=_safe_str(e), traceback=_format_tb(e))
        sys.exit(3)
    import_ms = (time.perf_counter() - t0) * 1000

    try:
        srv = _listen(sock_path)
    except OSError as e:  # e.g. path longer than the ~107-byte AF_UNIX limit, or directory missing
        _log("listen_error", kind=type(e).__name__, message=_safe_str(e), socket=sock_path)
        sys.exit(4)
    _socket_path, _socket_ino = sock_path, os.stat(sock_path).st_ino
    _log("ready", socket=sock_path, import_ms=round(import_ms, 3), pid=os.getpid())
    _serve(srv, fn)


def _standby(sock_path, fdir):
    # A pre-started container: listen at once; the function's folder appears later (the worker
    # mounts it), and the first line says so: {"load": {"env": {...}}}. Reply, then serve.
    global _socket_path, _socket_ino
    try:
        srv = _listen(sock_path)
    except OSError as e:
        _log("listen_error", kind=type(e).__name__, message=_safe_str(e), socket=sock_path)
        sys.exit(4)
    _socket_path, _socket_ino = sock_path, os.stat(sock_path).st_ino
    _log("standby", socket=sock_path, pid=os.getpid())
    conn, _ = srv.accept()
    line = conn.makefile("rb").readline()
    try:
        req = json.loads(line)
        env = req["load"]["env"]
        if not isinstance(env, dict):
            raise ValueError("load.env must be an object")
        os.environ.update({str(k): str(v) for k, v in env.items()})
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        conn.sendall(_dumps({"ok": False, "error": _error("BadRequest", _safe_str(e))}).encode() + b"\n")
        sys.exit(2)
    t0 = time.perf_counter()
    try:
        fn = _import_function(os.path.abspath(fdir))
    except BaseException as e:
        err = _error(type(e).__name__, _safe_str(e), _format_tb(e))
        _log("import_error", **err)
        conn.sendall(_dumps({"ok": False, "error": err}).encode() + b"\n")
        sys.exit(3)
    import_ms = (time.perf_counter() - t0) * 1000
    conn.sendall(_dumps({"ok": True, "import_ms": round(import_ms, 3)}).encode() + b"\n")
    _log("ready", socket=sock_path, import_ms=round(import_ms, 3), pid=os.getpid())
    _serve(srv, fn, conn)


if __name__ == "__main__":
    main()
