# Every target creates .venv and installs the locked dependencies when they are missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint soak bench bench-quick bench-minio lock clean

$(STAMP): requirements/dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# s3rver, one of the test servers, comes from npm; without npm its tests skip (CI requires them).
NODE_STAMP := tests/servers/node/node_modules/.installed
$(NODE_STAMP): tests/servers/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then bash .ci/install-servers && touch $@; \
	else echo "make: npm not found: the s3rver tests will be skipped" >&2; fi

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# pytest exits 5 when it collected no test: a broken suite, never a pass.
test: $(STAMP) $(NODE_STAMP)
	@$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check scanner tests benchmarks scripts
	$(BIN)/ruff format --check scanner tests benchmarks scripts
	$(BIN)/mypy --strict scanner
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

soak: $(STAMP)
	$(BIN)/python -m pytest -q -s -m soak tests/end_to_end/test_soak.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --server moto --sizes 10000 --repeat 1 --scaling-keys 100000

bench-minio: $(STAMP)
	docker compose -f benchmarks/docker-compose.yml up -d --wait
	$(BIN)/python -m benchmarks --endpoint-url http://127.0.0.1:9000 \
		--access-key minioadmin --secret-key minioadmin; \
	status=$$?; docker compose -f benchmarks/docker-compose.yml down -v; exit $$status

lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 -o requirements/runtime.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o requirements/dev.lock

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
