#!/usr/bin/env bash
# Builds the container image (`make image`): an OCI image archive made with
# buildah from scratch, holding the exporter and exactly what it needs to
# run: the glibc-baseline binary the packages ship, the shared libraries
# `ldd` lists for it (and the dynamic loader), nothing else: no shell, no
# package manager. It runs as the numeric user 65534 (nobody), which needs
# no /etc/passwd entry; the Kubernetes manifests run it as that user too.
#
# No daemon and no registry: buildah with the vfs storage driver, committed
# straight to an oci-archive file, tagged NAME (what
# packaging/kubernetes/daemonset.yaml names as its image).
#
# Usage: build.sh BINARY ARCHIVE NAME
set -euo pipefail

BIN=$1
ARCHIVE=$2
NAME=$3
BUILDAH=(buildah --storage-driver vfs)

[ -x "$BIN" ] || { echo "build.sh: $BIN is not an executable (make baseline)" >&2; exit 1; }
command -v buildah >/dev/null || { echo "build.sh: buildah missing (make image-deps)" >&2; exit 1; }

# The libraries and the loader, as the binary would find them here.
libs=$(ldd "$BIN" | awk '
    /=> \// { print $3; next }
    /^[[:space:]]*\// { print $1 }')
[ -n "$libs" ] || { echo "build.sh: ldd lists no library for $BIN" >&2; exit 1; }

ctr=$("${BUILDAH[@]}" from --quiet scratch)
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null' EXIT
"${BUILDAH[@]}" copy --quiet --chmod 0755 "$ctr" "$BIN" /usr/bin/sockdiag_exporter
for lib in $libs; do
    # The file itself under the name the binary asks for (ldd prints the
    # name; readlink -f finds the file behind a symlink).
    "${BUILDAH[@]}" copy --quiet --chmod 0755 "$ctr" "$(readlink -f "$lib")" "$lib"
done
version=$("$BIN" --version | awk '{print $2}')
"${BUILDAH[@]}" config \
    --entrypoint '["/usr/bin/sockdiag_exporter"]' \
    --cmd '' \
    --user 65534:65534 \
    --workingdir / \
    --port 19275/tcp \
    --label org.opencontainers.image.title=sockdiag_exporter \
    --label org.opencontainers.image.description="Prometheus exporter for Linux socket states and queues (sock_diag)" \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    "$ctr"
mkdir -p "$(dirname "$ARCHIVE")"
rm -f "$ARCHIVE"
"${BUILDAH[@]}" commit --quiet --format oci "$ctr" "oci-archive:$ARCHIVE:$NAME" >/dev/null
echo "image $NAME: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)); files: /usr/bin/sockdiag_exporter" $libs
