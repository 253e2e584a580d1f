#!/usr/bin/env python3
# Builds an OCI image layout holding two image indexes (multi-platform images) for the tests
# of registry images, from an image archive built by scripts/build-python-image.py:
#   multi      linux/amd64 = the base image, linux/arm64 = a tiny image that cannot run here
#   elsewhere  linux/arm64 and linux/s390x only: nothing for an amd64 host
#
#   python3 tests/images/build-index.py --base hello.tar --out DIR
# prints {"layout": DIR}; push with `skopeo copy --all oci:DIR:multi docker://...`.
import argparse
import hashlib
import io
import json
import os
import tarfile

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def put(out, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def foreign_image(out, arch):
    """A one-file image for another architecture; its manifest's descriptor."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = arch.encode()
        info = tarfile.TarInfo("foreign")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = buf.getvalue()
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/foreign"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(out, json.dumps(config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **put(out, layer)}],
    }
    return {"mediaType": MANIFEST, **put(out, json.dumps(manifest).encode()),
            "platform": {"os": "linux", "architecture": arch}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="an image archive of build-python-image.py")
    ap.add_argument("--out", required=True, help="the layout directory to write")
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "blobs", "sha256"), exist_ok=True)
    with tarfile.open(a.base) as tar:
        names = tar.getnames()
        for name in names:
            if name.startswith("blobs/sha256/"):
                with open(os.path.join(a.out, name), "wb") as f:
                    f.write(tar.extractfile(name).read())
        base = json.load(tar.extractfile("index.json"))["manifests"][0]
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    amd64 = {"mediaType": MANIFEST, "digest": base["digest"], "size": base["size"],
             "platform": {"os": "linux", "architecture": "amd64"}}
    tags = {
        "multi": [amd64, foreign_image(a.out, "arm64")],
        "elsewhere": [foreign_image(a.out, "arm64"), foreign_image(a.out, "s390x")],
    }
    entries = []
    for tag, manifests in tags.items():
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        entries.append({"mediaType": INDEX, **put(a.out, json.dumps(index).encode()),
                        "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": entries}, f)
    print(json.dumps({"layout": a.out}))


if __name__ == "__main__":
    main()
