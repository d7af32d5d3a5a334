#!/usr/bin/env python3
"""Unpacks an OCI image archive the way a container runtime reads it:
index.json -> the manifest -> its config and its layers, each layer (a tar,
gzip-compressed or not) extracted over the root filesystem in order, with
the OCI whiteouts applied. Prints the image's name (the index's
org.opencontainers.image.ref.name), entrypoint, cmd, user and the files of
the root filesystem as JSON, for tests/package/run.sh.

Usage: oci_unpack.py ARCHIVE WORKDIR   (WORKDIR/rootfs is the result)
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def blob(layout, digest):
    algo, hexdigest = digest.split(":", 1)
    with open(os.path.join(layout, "blobs", algo, hexdigest), "rb") as f:
        data = f.read()
    if algo == "sha256" and hashlib.sha256(data).hexdigest() != hexdigest:
        sys.exit(f"blob {digest}: content does not match its digest")
    return data


def main():
    archive, work = sys.argv[1], sys.argv[2]
    layout = os.path.join(work, "layout")
    rootfs = os.path.join(work, "rootfs")
    os.makedirs(layout)
    os.makedirs(rootfs)
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="fully_trusted")
    with open(os.path.join(layout, "oci-layout")) as f:
        if json.load(f).get("imageLayoutVersion") != "1.0.0":
            sys.exit("not an OCI image layout 1.0.0")
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    if len(index["manifests"]) != 1:
        sys.exit(f"{len(index['manifests'])} manifests in index.json, want 1")
    entry = index["manifests"][0]
    manifest = json.loads(blob(layout, entry["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    for layer in manifest["layers"]:
        data = blob(layout, layer["digest"])
        if layer["mediaType"].endswith("+gzip"):
            data = gzip.decompress(data)
        elif not layer["mediaType"].endswith(".tar"):
            sys.exit(f"layer media type {layer['mediaType']} not handled")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = []
            for m in tar.getmembers():
                base = os.path.basename(m.name)
                if base.startswith(".wh."):
                    target = os.path.join(rootfs, os.path.dirname(m.name), base[4:])
                    if os.path.lexists(target):
                        os.remove(target)
                    continue
                members.append(m)
            tar.extractall(rootfs, members=members, filter="fully_trusted")
    files = []
    for top, dirs, names in os.walk(rootfs):
        for name in names:
            files.append("/" + os.path.relpath(os.path.join(top, name), rootfs))
    runtime = config.get("config", {})
    print(json.dumps({
        "name": entry.get("annotations", {}).get("org.opencontainers.image.ref.name"),
        "entrypoint": runtime.get("Entrypoint"),
        "cmd": runtime.get("Cmd"),
        "user": runtime.get("User"),
        "ports": sorted(runtime.get("ExposedPorts", {})),
        "files": sorted(files),
    }))


main()
