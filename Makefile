# eventline: the two commands are `make up` (run it) and `make test` (test it).
.PHONY: up down test lint fmt status projector clients demo bench chaos cluster

up:    ## Install what is missing, build, and run the stack in the background
	@bash scripts/up.sh

down:  ## Stop what `make up` started
	@bash scripts/down.sh

test:  ## Bring up the dependencies and run all tests against them
	@bash scripts/test.sh

demo:  ## A guided tour of the running stack (make up or docker compose); fails if a step does not show what it should
	@bash scripts/demo.sh

bench: ## Benchmarks (QUICK=1 for a 3-minute smoke run, ONLY=projection for the projector and rebuilds only, topic and database kept); writes target/bench/results-<engine>.json and docs/benchmarks.md
	@QUICK=$(QUICK) bash scripts/bench.sh

chaos: ## Fault injection under load (SHORT=1 for a quick run); restarts the local PostgreSQL and Redis
	@SHORT=$(SHORT) bash scripts/chaos.sh

cluster: ## A three-broker Kafka cluster on loopback (RF 3, min.insync.replicas 2) in the foreground, to run the stack against
	@bash scripts/cluster.sh

clients: ## Generate the TypeScript and Python clients into target/clients/
	@bash scripts/clients.sh

lint:  ## Formatting and clippy, as CI runs them
	cargo fmt --all -- --check
	CARGO_TARGET_DIR=$${CARGO_TARGET_DIR:-$$HOME/.cache/eventline/target} cargo clippy --workspace --all-targets --locked -- -D warnings

projector: ## An operator command against the running stack, no build: make projector ARGS="dlq list" (status, rebuild, rollback, verify, dlq …, log-identity; ARGS=--help lists them)
	@bash scripts/projector.sh $(ARGS)

status: ## Projection status from the running projector
	@curl -fsS http://127.0.0.1:8083/status; echo
