#!/usr/bin/env python3
# Builds hostile OCI image layouts for the worker's hostile-image tests
# (tests/runtime/hostile_images.rs), on top of a good image archive built by
# scripts/build-python-image.py. Each case is a layout directory OUT/<case>; the cases aim at
# CANARY, a file outside every image root that must stay intact.
#
#   python3 tests/images/build-hostile-images.py --base hello.tar --out DIR --canary /abs/dir/secret \
#       --bomb-mb 100
#
# Prints a JSON object: case -> {"layout": path, "manifest": digest}.
import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile


def read_base(path):
    """The base archive's index, manifest, config and layer blobs."""
    with tarfile.open(path) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    index = json.loads(files["index.json"])
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(files["blobs/sha256/" + manifest_digest[7:]])
    blob = lambda d: files["blobs/sha256/" + d[7:]]
    return manifest, blob(manifest["config"]["digest"]), [blob(l["digest"]) for l in manifest["layers"]]


def tar_layer(entries):
    """A layer from (name, kind, data/target, mode) tuples; names are written as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, arg, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 1700000000
            if kind == "file":
                info.size = len(arg)
                t.addfile(info, io.BytesIO(arg))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "char": tarfile.CHRTYPE}[kind]
            if kind == "symlink":
                info.linkname = arg
            if kind == "char":
                info.devmajor, info.devminor = 1, 5  # /dev/zero
            t.addfile(info)
    return buf.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"))
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def path(self, digest):
        return os.path.join(self.root, "blobs", "sha256", digest[7:])

    def blob(self, data, shared=None):
        """Writes a blob; one in `shared` (digest -> path) is hard-linked from there instead."""
        d = sha(data)
        if shared is not None and d in shared:
            os.link(shared[d], self.path(d))
            return d
        with open(self.path(d), "wb") as f:
            f.write(data)
        if shared is not None:
            shared[d] = self.path(d)
        return d

    def desc(self, media_type, digest):
        """A descriptor, with the size of a blob that is a regular file (a registry needs it)."""
        d = {"mediaType": media_type, "digest": digest}
        st = os.lstat(self.path(digest))
        if stat.S_ISREG(st.st_mode):
            d["size"] = st.st_size
        return d

    def finish(self, config_digest, layer_digests, manifest_override=None):
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": self.desc("application/vnd.oci.image.config.v1+json", config_digest),
            "layers": [self.desc("application/vnd.oci.image.layer.v1.tar", d) for d in layer_digests],
        }
        data = json.dumps(manifest).encode()
        digest = manifest_override or sha(data)
        with open(self.path(digest), "wb") as f:
            f.write(data)
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest}]}, f)
        return digest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="a good image archive (scripts/build-python-image.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--canary", required=True, help="an absolute file path outside every image root")
    ap.add_argument("--bomb-mb", type=int, default=100, help="uncompressed size of the gzip bomb layer")
    a = ap.parse_args()
    base_manifest, config, base_layers = read_base(a.base)
    canary = a.canary.lstrip("/")
    canary_dir = os.path.dirname(a.canary)
    up = "../" * 64
    cases = {}
    shared = {}

    def make(name, extra_layers, manifest_override=None, tamper=None):
        """The base image with `extra_layers` below its own (so that a refused layer is met
        before the base's large one is unpacked); `tamper(layout, extra digests)` spoils it."""
        lay = Layout(os.path.join(a.out, name))
        config_digest = lay.blob(config)
        extra = [lay.blob(l) for l in extra_layers]
        if tamper is not None:
            tamper(lay, extra)
        digests = extra + [lay.blob(l, shared) for l in base_layers]
        manifest = lay.finish(config_digest, digests, manifest_override)
        cases[name] = {"layout": lay.root, "manifest": manifest}
        return lay, digests

    make("good", [])
    make("dotdot", [tar_layer([(up + canary, "file", b"pwned", 0o644)])])
    make("absolute", [tar_layer([(a.canary, "file", b"pwned", 0o644)])])
    make("whiteout-escape", [tar_layer([(up + canary_dir.lstrip("/") + "/.wh." + os.path.basename(a.canary),
                                          "file", b"", 0o644)])])
    link = tar_layer([("x", "symlink", canary_dir, 0o777)])
    make("link-whiteout", [link, tar_layer([("x/.wh." + os.path.basename(a.canary), "file", b"", 0o644)])])
    make("link-write", [link, tar_layer([("x/planted", "file", b"pwned", 0o644)])])
    # `r -> /` then a whiteout under r: aimed at the canary rather than /etc, so that a broken
    # worker costs the canary only.
    make("root-link-whiteout", [tar_layer([("r", "symlink", "/", 0o777)]),
                                tar_layer([("r/" + canary_dir.lstrip("/") + "/.wh." + os.path.basename(a.canary),
                                            "file", b"", 0o644)])])

    def link_to(target):
        def tamper(lay, digests):
            os.remove(lay.path(digests[-1]))
            os.symlink(target, lay.path(digests[-1]))
        return tamper

    small = tar_layer([("hello", "file", b"hi", 0o644)])
    make("blob-zero", [small], tamper=link_to("/dev/zero"))
    fifo = os.path.join(a.out, "fifo")
    os.mkfifo(fifo)
    make("blob-fifo", [small], tamper=link_to(fifo))

    def fifo_itself(lay, digests):
        os.remove(lay.path(digests[-1]))
        os.mkfifo(lay.path(digests[-1]))
    make("blob-is-fifo", [small], tamper=fifo_itself)
    lay, _ = make("index-zero", [])
    os.remove(os.path.join(lay.root, "index.json"))
    os.symlink("/dev/zero", os.path.join(lay.root, "index.json"))

    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=1) as z:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("zeros")
            info.size = a.bomb_mb << 20
            t.addfile(info, io.BytesIO(bytes(info.size)))
        z.write(buf.getvalue())
    make("bomb", [bomb.getvalue()])

    def flip(lay, digests):
        p = lay.path(digests[-1])
        data = bytearray(open(p, "rb").read())
        data[data.index(b"original")] = ord("O")
        open(p, "wb").write(data)
    make("tampered-layer", [tar_layer([("tampered", "file", b"original", 0o644)])], tamper=flip)
    # A manifest of its own stored under (and named by) the good image's manifest digest.
    make("claims-good-digest", [tar_layer([("function/main.py", "file",
                                           b"def main(args):\n    return {'body': 'impostor'}\n", 0o644)])],
         manifest_override=cases["good"]["manifest"])

    make("setuid", [tar_layer([
        ("function/suid", "file", b"#!/bin/sh\n", 0o4755),
        ("function/sgid", "file", b"#!/bin/sh\n", 0o2755),
        ("shared", "dir", None, 0o3777),
        ("function/zero", "char", None, 0o666),
    ])])
    make("opaque", [
        tar_layer([("data", "dir", None, 0o755), ("data/old", "file", b"old", 0o644),
                   ("data/keep", "file", b"keep", 0o644), ("gone", "file", b"gone", 0o644)]),
        tar_layer([("data/new", "file", b"new", 0o644), ("data/.wh..wh..opq", "file", b"", 0o644),
                   (".wh.gone", "file", b"", 0o644)]),
    ])
    # An archive holding the good layout and an entry aimed at the canary.
    path = os.path.join(a.out, "archive-dotdot.tar")
    with tarfile.open(path, "w") as t:
        t.add(cases["good"]["layout"], arcname=".")
        info = tarfile.TarInfo(up + canary)
        info.size = 5
        t.addfile(info, io.BytesIO(b"pwned"))
    cases["archive-dotdot"] = {"archive": path}
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
