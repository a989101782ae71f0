#!/usr/bin/env bash
# `make image`: the collector's OCI image, built without a Docker daemon (podman) from
# deploy/Containerfile: a static musl tally-collector, the system's CA bundle and a passwd entry
# for uid 65532, from scratch. Usage: scripts/image.sh [TAG] (default tally-collector:latest).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-tally-collector:latest}"
target=x86_64-unknown-linux-musl
cargo build --release --locked -p tally-collector --target "$target"
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/bin" "$context/rootfs/etc/ssl/certs" "$context/data"
# Without its symbols: a third of the size.
strip -o "$context/rootfs/usr/bin/tally-collector" "$target_dir/$target/release/tally-collector"
cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
echo 'tally:x:65532:65532:tally:/data:/sbin/nologin' >"$context/rootfs/etc/passwd"
echo 'tally:x:65532:' >"$context/rootfs/etc/group"
cp deploy/Containerfile "$context/"
# Docker's format keeps the HEALTHCHECK (OCI's has none).
podman build --quiet --format docker --tag "$tag" --file "$context/Containerfile" "$context"
podman image inspect --format '{{.Size}}' "$tag" |
  awk -v tag="$tag" '{ printf "%s: %.1f MB\n", tag, $1 / 1e6 }'
