#!/usr/bin/env python3
# Writes a minimal pure-Python wheel for the dependency tests, so that they need no package
# index: `make-wheel.py OUTDIR NAME VERSION [--blob-kb N]`. The package `NAME` holds
# VALUE = "NAME-VERSION" and, with --blob-kb, a file of N KiB of random bytes (to exceed size
# limits). The wheel follows the format pip installs: METADATA, WHEEL and RECORD with hashes.
import argparse
import base64
import hashlib
import os
import zipfile


def record_hash(data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "sha256=%s" % digest


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--blob-kb", type=int, default=0)
    a = p.parse_args()
    dist = "%s-%s.dist-info" % (a.name, a.version)
    files = {
        "%s/__init__.py" % a.name: ("VALUE = %r\n" % ("%s-%s" % (a.name, a.version))).encode(),
        dist + "/METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (a.name, a.version)).encode(),
        dist + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: iluvatar-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if a.blob_kb:
        files["%s/blob.bin" % a.name] = os.urandom(a.blob_kb * 1024)
    record = "".join("%s,%s,%d\n" % (n, record_hash(d), len(d)) for n, d in files.items()) + dist + "/RECORD,,\n"
    files[dist + "/RECORD"] = record.encode()
    os.makedirs(a.outdir, exist_ok=True)
    path = os.path.join(a.outdir, "%s-%s-py3-none-any.whl" % (a.name, a.version))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files.items():
            z.writestr(n, d)
    print(path)


if __name__ == "__main__":
    main()
