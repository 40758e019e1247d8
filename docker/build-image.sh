#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# build-image.sh: assemble remora's container image without a Docker engine, from a static
# remora binary, with umoci (OCI layout) and skopeo (docker-archive). The image is the one
# docker/Dockerfile builds: one layer made by docker/rootfs.sh (/remora, /etc/passwd, /etc/group,
# /etc/nsswitch.conf, /etc/remora/remora.yaml; /etc/ssl/certs/ca-certificates.crt only with
# --ca-certs), user
# 65532:65532, entrypoint ["/remora"], ports 8000/tcp and 9090/tcp, OCI labels.
#
#   docker/build-image.sh --binary PATH --out DIR [--tag TAG] [--check-reproducible]
#                         [--max-bytes N] [--config FILE] [--ca-certs FILE]
#                         [--version V] [--revision R] [--source URL]
#
# Writes DIR/oci (an OCI image layout; the image's ref name is TAG, default remora:dev) and
# DIR/remora.tar (a docker-archive tagged TAG, for `podman load` / `docker load`), replacing
# those two and nothing else in DIR. The last line on stdout is
#   image: <manifest digest> compressed <N> bytes
# where N counts what a registry stores and a pull transfers: the gzip layer blob + the config
# blob + the manifest blob of the OCI layout (index.json and the docker-archive not counted).
# Exit 1 when N exceeds --max-bytes (default 3000000), or with --check-reproducible when a
# second build from the same inputs gives another manifest digest; 2 on a usage error.
#
# Reproducible: every timestamp (file mtimes, the config's `created`, the history entry) is
# SOURCE_DATE_EPOCH (default: the time of the repository's last commit), every file is owned by
# 0:0 with a fixed mode, umoci writes the tar entries in lexical order with no user/group
# names, and the layer is recompressed with `gzip -9 -n` (no name or time). Same binary, config, CA bundle,
# labels and epoch: same manifest digest.
#
# Needs umoci and skopeo (Debian packages umoci, skopeo), python3 and readelf (binutils). Runs
# as root; as another user umoci runs with --rootless (files are still stored as 0:0).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

usage() {
    sed -n '/^#   docker\/build-image.sh/,/^#$/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "build-image.sh: $*" >&2; exit 1; }
note() { echo "build-image.sh: $*" >&2; }

binary="" out="" tag="remora:dev" check_repro=0 max_bytes=3000000
# No CA bundle by default (docker/README.md, "Trust store"): TLS upstreams name their tls.ca.
config="$ROOT/conf/remora.yaml" ca_certs=-
version="" revision="" source_url=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --tag) tag=${2:?}; shift 2 ;;
        --check-reproducible) check_repro=1; shift ;;
        --max-bytes) max_bytes=${2:?}; shift 2 ;;
        --config) config=${2:?}; shift 2 ;;
        --ca-certs) ca_certs=${2:?}; shift 2 ;;
        --version) version=${2:?}; shift 2 ;;
        --revision) revision=${2:?}; shift 2 ;;
        --source) source_url=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "build-image.sh: unknown argument: $1" >&2; usage ;;
    esac
done
if [ -z "$binary" ] || [ -z "$out" ]; then usage; fi
[[ "$max_bytes" =~ ^[0-9]+$ ]] || die "--max-bytes wants a number of bytes, not '$max_bytes'"
[[ "$tag" =~ ^[A-Za-z0-9][A-Za-z0-9._/:-]*$ ]] || die "--tag '$tag' is not [host[:port]/]name[:tag]"
[[ "${tag##*/}" == *:* ]] || tag="$tag:latest"

for t in umoci skopeo python3 readelf; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install umoci skopeo python3 binutils)"
done
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then die "--binary $binary: not an executable file"; fi
[ -f "$config" ] || die "--config $config: no such file"
[ "$ca_certs" = - ] || [ -f "$ca_certs" ] ||
    die "--ca-certs $ca_certs: no such file (Debian's bundle: apt-get install ca-certificates)"

# The image has no libc and no loader: only a static binary runs in it.
readelf -h "$binary" >/dev/null 2>&1 || die "$binary is not an ELF file"
if readelf -lW "$binary" | grep -q 'Requesting program interpreter'; then
    die "$binary is dynamically linked; build it with ./configure --enable-static-binary"
fi
readelf -SW "$binary" | grep -q ' \.symtab ' &&
    note "warning: $binary is not stripped (strip -o OUT $binary makes the image smaller)"
case "$(readelf -h "$binary" | sed -n 's/^ *Machine: *//p')" in
    *X86-64*) arch=amd64 ;;
    *AArch64*) arch=arm64 ;;
    *RISC-V*) arch=riscv64 ;;
    *PowerPC64*) arch=ppc64le ;;
    *S/390*) arch=s390x ;;
    *) die "$binary: unknown machine for an image architecture" ;;
esac

# Labels. The version and commit come from the binary itself, so they name what is shipped.
verout=$("$binary" --version 2>/dev/null) || die "$binary --version failed"
[ -n "$version" ] || version=$(sed -n '1s/^remora //p' <<<"$verout")
if [ -z "$revision" ]; then
    revision=$(sed -n 's/^commit //p' <<<"$verout")
    revision=${revision%-dirty}
    full=$(git -C "$ROOT" rev-parse -q --verify "${revision}^{commit}" 2>/dev/null) && revision=$full
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null) ||
        die "SOURCE_DATE_EPOCH is not set and $ROOT has no git history to take it from"
fi
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH is not a number"
export SOURCE_DATE_EPOCH
[ -n "$source_url" ] || source_url=$(git -C "$ROOT" remote get-url origin 2>/dev/null) || source_url=unknown
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

rootless=()
[ "$(id -u)" -eq 0 ] || rootless=(--rootless)
ca_path=""
[ "$ca_certs" = - ] || ca_path=" /etc/ssl/certs/ca-certificates.crt"

# build LAYOUT_DIR: one image into LAYOUT_DIR (which must not exist); echoes nothing.
build() {
    local layout=$1 work bundle
    work=$(mktemp -d "${TMPDIR:-/tmp}/remora-image.XXXXXX")
    bundle=$work/bundle
    umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci unpack "${rootless[@]}" --image "$layout:$tag" "$bundle" >/dev/null
    "$HERE/rootfs.sh" "$binary" "$config" "$ca_certs" "$bundle/rootfs"
    umoci repack --image "$layout:$tag" --refresh-bundle=false \
        --history.created "$created" --history.author "" \
        --history.created_by "docker/rootfs.sh /remora /etc/passwd /etc/group /etc/nsswitch.conf${ca_path} /etc/remora/remora.yaml" \
        --history.comment "remora $version" "$bundle"
    umoci config --image "$layout:$tag" --no-history \
        --created "$created" --architecture "$arch" --os linux \
        --config.user 65532:65532 \
        --config.entrypoint /remora \
        --config.exposedports 8000/tcp --config.exposedports 9090/tcp \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --config.stopsignal SIGTERM \
        --config.label "org.opencontainers.image.title=remora" \
        --config.label "org.opencontainers.image.description=remora, a sidecar reverse proxy (HTTP/1.1, h2c, gRPC)" \
        --config.label "org.opencontainers.image.licenses=Apache-2.0" \
        --config.label "org.opencontainers.image.source=$source_url" \
        --config.label "org.opencontainers.image.version=$version" \
        --config.label "org.opencontainers.image.revision=$revision"
    umoci gc --layout "$layout"
    recompress "$layout"
    chmod -R a+rX "$layout"
    rm -rf "$work"
}

# recompress LAYOUT_DIR: umoci writes its layers with Go's default gzip level; the layer is
# redone with `gzip -9 -n` (no name, no time: still reproducible), and the manifest and index
# point at it. The uncompressed tar, hence the config's diff_id, does not change. About 10% less
# to store and pull (the static binary with OpenSSL: 3.15 MB -> 2.85 MB).
recompress() {
    python3 - "$1" "$tag" <<'EOF'
import hashlib, json, os, subprocess, sys
layout, tag = sys.argv[1], sys.argv[2]
def blob(digest):
    return os.path.join(layout, "blobs", *digest.split(":", 1))
def put(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob(d), "wb") as f:
        f.write(data)
    return d, len(data)
ipath = os.path.join(layout, "index.json")
index = json.load(open(ipath))
(entry,) = [d for d in index["manifests"]
            if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
gone = [entry["digest"]]
man = json.load(open(blob(entry["digest"])))
for layer in man["layers"]:
    assert layer["mediaType"].endswith("tar+gzip"), layer["mediaType"]
    tar = subprocess.run(["gzip", "-dc", blob(layer["digest"])], check=True,
                         stdout=subprocess.PIPE).stdout
    gz = subprocess.run(["gzip", "-9", "-n", "-c"], input=tar, check=True,
                        stdout=subprocess.PIPE).stdout
    gone.append(layer["digest"])
    layer["digest"], layer["size"] = put(gz)
entry["digest"], entry["size"] = put(json.dumps(man, separators=(",", ":")).encode())
with open(ipath, "w") as f:
    json.dump(index, f, separators=(",", ":"))
keep = {entry["digest"]} | {l["digest"] for l in man["layers"]}
for d in gone:
    if d not in keep:
        os.unlink(blob(d))
EOF
}

# facts LAYOUT_DIR: "manifest_digest config_digest layer_bytes config_bytes manifest_bytes"
facts() {
    python3 - "$1" "$tag" <<'EOF'
import json, os, sys
layout, tag = sys.argv[1], sys.argv[2]
index = json.load(open(os.path.join(layout, "index.json")))
m = [d for d in index["manifests"]
     if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
assert len(m) == 1, "expected one manifest named %s in %s/index.json" % (tag, layout)
def blob(digest):
    return os.path.join(layout, "blobs", *digest.split(":", 1))
man = json.load(open(blob(m[0]["digest"])))
layers = sum(os.path.getsize(blob(l["digest"])) for l in man["layers"])
print(m[0]["digest"], man["config"]["digest"], layers,
      os.path.getsize(blob(man["config"]["digest"])), os.path.getsize(blob(m[0]["digest"])))
EOF
}

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/oci" "$out/remora.tar"
build "$out/oci"
read -r digest config_digest layer_bytes config_bytes manifest_bytes < <(facts "$out/oci")
total=$((layer_bytes + config_bytes + manifest_bytes))

if [ "$check_repro" -eq 1 ]; then
    again=$(mktemp -d "${TMPDIR:-/tmp}/remora-image-again.XXXXXX")
    sleep 1   # a clock that leaks into the image shows as a different digest
    build "$again/oci"
    read -r digest2 _ < <(facts "$again/oci")
    rm -rf "$again"
    if [ "$digest2" != "$digest" ]; then
        echo "reproducible: NO, first build $digest, second build $digest2"
        die "two builds from the same inputs differ"
    fi
    echo "reproducible: yes, two builds gave $digest"
fi

skopeo copy -q "oci:$out/oci:$tag" "docker-archive:$out/remora.tar:$tag"

echo "inputs: binary $(sha256sum <"$binary" | cut -c1-16) ($(stat -c %s "$binary") bytes), config $config, CA bundle ${ca_certs/#-/none}, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH ($created)"
echo "labels: version $version, revision $revision, source $source_url"
echo "oci: $out/oci (ref $tag), docker-archive: $out/remora.tar ($(stat -c %s "$out/remora.tar") bytes)"
echo "config (image id): $config_digest"
echo "compressed: layer $layer_bytes + config $config_bytes + manifest $manifest_bytes = $total bytes (limit $max_bytes)"
echo "image: $digest compressed $total bytes"
[ "$total" -le "$max_bytes" ] || die "compressed image $total bytes > limit $max_bytes bytes"
