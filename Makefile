# The README's two commands, and the static agent builds. Every recipe is a plain cargo call.
.PHONY: run test image packages agent-x86_64 agent-aarch64

# Runs Tally on this machine: the collector and a local agent enrolled against it.
run:
	scripts/run-local.sh

# Everything CI checks: formatting, lints, every test of the workspace, the collector's tests on
# shifted clocks, and a summary line per test binary (scripts/test.sh).
test:
	scripts/test.sh

# The collector's container image (podman, from scratch; deploy/Containerfile).
image:
	scripts/image.sh

# The agent's Debian packages and release tarballs, amd64 and arm64, with SHA256SUMS
# (scripts/packages.sh; target/packages/).
packages:
	scripts/packages.sh

# Static agent binaries for socket appliances (docs/field-engineer.md, "Building the agent").
agent-x86_64:
	cargo build --release --locked -p tally-agent --target x86_64-unknown-linux-musl

agent-aarch64:
	cargo build --release --locked -p tally-agent --target aarch64-unknown-linux-musl
