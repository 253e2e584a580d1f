#!/usr/bin/env python3
# Builds a small self-contained OCI image archive for a Python function, with no registry and
# no container engine: the host's python3.11 and the shared libraries it needs, its standard
# library (without tests and GUI modules), the entrypoint, and the function.
#
# --server agent (the default): the Ilúvatar agent is the entrypoint, the function is in /function.
# --server http: a function server of the reference platform's protocol (runtimes/python/
#   function_server.py: GET / and POST /invoke on port 8080) is the entrypoint, the function is
#   in /app, the working directory, as in the reference platform's images; --server unix: the
#   same server in its Unix-socket variant. --entrypoint '["/usr/bin/python3.11", ...]' replaces
#   the entrypoint and command ('[]': an image with neither, which the worker refuses).
#
#   python3 scripts/build-python-image.py --function functions/hello --out hello.tar [--tag hello]
#   iluvatar_worker_cli register --name hello --version 1 --image oci-archive:$PWD/hello.tar:hello
import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data"}
RUNTIMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runtimes", "python")
AGENT = os.path.join(RUNTIMES, "agent.py")
SERVER = os.path.join(RUNTIMES, "function_server.py")
# Where the entrypoint and the function are in the image, per --server.
PLACES = {
    "agent": ("/iluvatar/agent/agent.py", AGENT, "/function"),
    "http": ("/iluvatar/server/function_server.py", SERVER, "/app"),
    "unix": ("/iluvatar/server/function_server.py", SERVER, "/app"),
}


def shared_libraries(paths):
    """The shared libraries (and the dynamic loader) the given ELF files need, transitively."""
    libs = set()
    for p in paths:
        out = subprocess.run(["ldd", p], capture_output=True, text=True).stdout
        for m in re.finditer(r"(/\S+\.so[.\d]*)", out):
            libs.add(m.group(1))
    resolved = set()
    for lib in libs:
        resolved.add(lib)
        resolved.add(os.path.realpath(lib))
    return sorted(resolved)


def add_path(tar, path, arcname=None):
    """Adds a file, symlink or directory with its real metadata (mtimes keep .pyc valid)."""
    info = tar.gettarinfo(path, arcname=(arcname or path).lstrip("/"))
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isreg():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def add_parents(tar, arcpath, seen):
    parts = arcpath.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)


def layer_bytes(function_dir, server):
    program, program_source, function_place = PLACES[server]
    buf = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for link, target in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
            seen.add(link)
        elves = [PYTHON]
        for root, dirs, files in os.walk(STDLIB):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("site-packages"))
            elves += [os.path.join(root, f) for f in files if f.endswith(".so")]
        files = [PYTHON] + shared_libraries(elves)
        for root, dirs, names in os.walk(STDLIB):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("site-packages"))
            files += [os.path.join(root, n) for n in sorted(names)]
        added = set()
        for f in files:
            # The image links /lib and /lib64 into /usr, as the merged-/usr host does.
            for top in ("/lib64/", "/lib/"):
                if f.startswith(top):
                    f = "/usr" + f
            chain = [f]
            while os.path.islink(chain[-1]):  # keep symlinks (the loader's, sonames)
                chain.append(os.path.join(os.path.dirname(chain[-1]), os.readlink(chain[-1])))
            for g in chain:
                g = os.path.normpath(g)
                for top in ("/lib64/", "/lib/"):
                    if g.startswith(top):
                        g = "/usr" + g
                if g not in added:
                    added.add(g)
                    add_parents(tar, g, seen)
                    add_path(tar, g)
        add_parents(tar, program, seen)
        add_path(tar, os.path.abspath(program_source), program)
        for name in sorted(os.listdir(function_dir)):
            p = os.path.join(function_dir, name)
            if os.path.isfile(p):
                add_parents(tar, function_place + "/" + name, seen)
                add_path(tar, p, function_place + "/" + name)
    return buf.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest)
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    return {"digest": "sha256:" + digest, "size": len(data)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--function", required=True, help="folder holding main.py")
    ap.add_argument("--out", required=True, help="the OCI archive to write")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--server", choices=sorted(PLACES), default="agent", help="what the entrypoint runs")
    ap.add_argument("--entrypoint", help="a JSON list replacing the entrypoint and command")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.function, "main.py")):
        sys.exit(f"{a.function} has no main.py")
    layer = layer_bytes(a.function, a.server)
    program, _, function_place = PLACES[a.server]
    if a.server == "agent":
        run = {"Entrypoint": [PYTHON, "-u", program], "WorkingDir": "/tmp"}
        env = ["ILUVATAR_FUNCTION_DIR=" + function_place]
    else:
        run = {"Entrypoint": [PYTHON, "-u", program], "Cmd": [a.server], "WorkingDir": function_place}
        env = []
    if a.entrypoint is not None:
        run = {k: v for k, v in run.items() if k == "WorkingDir"}
        entrypoint = json.loads(a.entrypoint)
        if entrypoint:
            run["Entrypoint"] = entrypoint
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": dict(run, Env=["PATH=/usr/bin:/bin", "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1"] + env),
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    with tarfile.open(a.out, "w") as out:
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        info = tarfile.TarInfo("oci-layout")
        info.size = len(layout)
        out.addfile(info, io.BytesIO(layout))
        layer_desc = blob(out, layer)
        config_desc = blob(out, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
        }
        manifest_desc = blob(out, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "annotations": {"org.opencontainers.image.ref.name": a.tag},
            }],
        }
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    print(json.dumps({"archive": a.out, "tag": a.tag, "server": a.server, "layer_bytes": len(layer),
                      "manifest": manifest_desc["digest"]}))


if __name__ == "__main__":
    main()
