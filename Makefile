# The README's two commands, and the static agent builds. Every recipe is a plain cargo call.
.PHONY: run test agent-x86_64 agent-aarch64

# Runs Tally on this machine: the collector and a local agent enrolled against it.
run:
	scripts/run-local.sh

# Everything CI checks: formatting, lints, and every test of the workspace.
test:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --workspace --locked

# Static agent binaries for socket appliances (README, "Building the agent").
agent-x86_64:
	cargo build --release --locked -p tally-agent --target x86_64-unknown-linux-musl

agent-aarch64:
	cargo build --release --locked -p tally-agent --target aarch64-unknown-linux-musl
