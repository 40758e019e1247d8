#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# rootfs.sh: lay out the whole file system of remora's image in DEST, the one layer both
# docker/Dockerfile (in its builder stage) and docker/build-image.sh put on an empty image.
#
#   SOURCE_DATE_EPOCH=N docker/rootfs.sh BINARY CONFIG CA_BUNDLE DEST
#
#   /remora                               BINARY (static), 0755
#   /etc/passwd, /etc/group               root 0, remora 65532, nobody 65534; no shell, 0644
#   /etc/nsswitch.conf                    files, then DNS for hosts, 0644
#   /etc/ssl/certs/ca-certificates.crt    CA_BUNDLE, 0644, only when CA_BUNDLE is not "-": a
#                                         system trust store for TLS upstreams without tls.ca
#   /etc/remora/remora.yaml               CONFIG, 0644 (remora's default config path)
#
# Every directory 0755, every entry owned by 0:0 when run as root, every mtime
# SOURCE_DATE_EPOCH, so the layer's bytes depend only on the inputs. POSIX sh: it runs in the
# Dockerfile's builder stage.
set -eu
[ $# -eq 4 ] || { echo "usage: SOURCE_DATE_EPOCH=N $0 BINARY CONFIG CA_BUNDLE DEST" >&2; exit 2; }
bin=$1 conf=$2 ca=$3 dest=$4
: "${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set (seconds since the epoch)}"
umask 022

mkdir -p "$dest"
for d in etc etc/remora; do
    mkdir -p "$dest/$d"
done
cp "$bin" "$dest/remora"
cp "$conf" "$dest/etc/remora/remora.yaml"
if [ "$ca" != - ]; then
    mkdir -p "$dest/etc/ssl/certs"
    cp "$ca" "$dest/etc/ssl/certs/ca-certificates.crt"
    chmod 0755 "$dest/etc/ssl" "$dest/etc/ssl/certs"
    chmod 0644 "$dest/etc/ssl/certs/ca-certificates.crt"
fi
cat > "$dest/etc/passwd" <<'EOF'
root:x:0:0:root:/:/sbin/nologin
remora:x:65532:65532:remora:/nonexistent:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat > "$dest/etc/group" <<'EOF'
root:x:0:
remora:x:65532:
nobody:x:65534:
EOF
cat > "$dest/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF

chmod 0755 "$dest" "$dest/etc" "$dest/etc/remora" "$dest/remora"
chmod 0644 "$dest/etc/passwd" "$dest/etc/group" "$dest/etc/nsswitch.conf" \
    "$dest/etc/remora/remora.yaml"
[ "$(id -u)" -ne 0 ] || chown -R 0:0 "$dest"
find "$dest" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
