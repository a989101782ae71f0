#!/usr/bin/env bash
# `make packages`: the agent for the sockets, per architecture (amd64, arm64), as a Debian
# package (dpkg-deb, from packaging/debian/) and a release tarball, with SHA256SUMS, in
# target/packages/. The static musl binaries come from `make agent-x86_64 agent-aarch64`.
# PACKAGE_REVISION (default 1) is the Debian revision: an upgrade is a higher one.
set -euo pipefail
cd "$(dirname "$0")/.."
revision="${PACKAGE_REVISION:-1}"
version=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "tally-agent"))')
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/packages"
rm -rf "$out"
mkdir -p "$out"

# Debian architecture, Rust's, and the strip that reads its binaries.
for triple in amd64:x86_64:strip arm64:aarch64:aarch64-linux-gnu-strip; do
  IFS=: read -r arch cpu strip <<<"$triple"
  triple=$cpu-unknown-linux-musl
  cargo build --release --locked -p tally-agent --target "$triple"
  binary="$target_dir/$triple/release/tally-agent"

  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  install -D -m 0755 "$binary" "$stage/usr/bin/tally-agent"
  "$strip" "$stage/usr/bin/tally-agent" # the symbol table: 2 MB a socket does not need
  install -D -m 0644 systemd/tally-agent.service "$stage/lib/systemd/system/tally-agent.service"
  install -D -m 0644 systemd/tally-agent.path "$stage/lib/systemd/system/tally-agent.path"
  install -D -m 0644 systemd/tally-agent.modules-load.conf "$stage/usr/lib/modules-load.d/tally-agent.conf"
  # The commented default configuration, as the agent prints it (the x86_64 build, made first,
  # runs here; the text is the same for every architecture).
  mkdir -p "$stage/etc/tally-agent" "$stage/usr/share/doc/tally-agent"
  "$target_dir/x86_64-unknown-linux-musl/release/tally-agent" default-config >"$stage/etc/tally-agent/agent.toml"
  echo "tally-agent $version: Apache-2.0" >"$stage/usr/share/doc/tally-agent/copyright"
  chmod 0644 "$stage/etc/tally-agent/agent.toml" "$stage/usr/share/doc/tally-agent/copyright"

  # The release tarball: the same files, without Debian's.
  tarball="tally-agent-$version-$arch.tar.gz"
  tar -C "$stage" --owner=0 --group=0 -czf "$out/$tarball" usr lib etc

  mkdir -p "$stage/DEBIAN"
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  sed -e "s/@VERSION@/$version-$revision/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    packaging/debian/control >"$stage/DEBIAN/control"
  install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/conffiles"
  install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
  deb="tally-agent_${version}-${revision}_$arch.deb"
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/$deb" >/dev/null
  rm -rf "$stage"
  trap - EXIT
  echo "$out/$deb"
  echo "$out/$tarball"
done
(cd "$out" && sha256sum -- *.deb *.tar.gz >SHA256SUMS)
echo "$out/SHA256SUMS"
