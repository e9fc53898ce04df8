# geventchannels developer commands. CI runs .ci/run: install, lint, wheel-smoke, test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Both Django LTS releases the README promises: the newest in .venv, the oldest in its own.
DJANGO_NEW := django>=5.2,<6
DJANGO_OLD := django>=4.2,<5
VENV_OLD   := .venv-django42
PY_OLD     := $(VENV_OLD)/bin/python
PYTEST_ARGS ?=
# Tests run with gevent's monkey patching applied before pytest imports anything, in
# parallel (pytest-xdist; a file's tests all in one worker, patched the same way, see
# tests/xdist_worker.py). Half of the suite's time is waiting on sockets, subprocesses and
# timers, so one worker more than the cores; PYTEST_WORKERS=0 runs it all in one process.
# Files go out in their order, not those with most tests first: that would leave the few
# long multi-process files for the end, run one after the other.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
PYTEST := -m gevent.monkey --module pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Debian packages the tests run, as command:package: redis-server (Redis layer tests),
# chromium (the demo's browser test), node and npm (the benchmark smoke's load generator),
# git (the wheel smoke packs what git tracks).
SYSTEM_DEPS := redis-server:redis-server chromium:chromium node:nodejs npm:npm git:git

.PHONY: install install-django42 test test-django52 test-django42 test-slow wheel-smoke \
	demo bench bench-quick lint system-deps clean

%/bin/python:
	$(PYTHON) -m venv $*
	$@ -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e ".[test]" "$(DJANGO_NEW)"

install-django42: $(PY_OLD)
	$(PY_OLD) -m pip install --quiet -e ".[test]" "$(DJANGO_OLD)"

# Installed when missing and we are root, else we say what to install.
system-deps:
	@missing=""; \
	for pair in $(SYSTEM_DEPS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing$$missing (needed by the tests)"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "not on PATH: install them (Debian/Ubuntu: sudo apt-get install$$missing)"; exit 1; \
	fi

# The whole suite on each Django LTS in turn; PYTEST_ARGS goes to both runs.
test: test-django52 test-django42

test-django52: install system-deps
	@$(PY) -c 'import django; print("== tests on Django", django.get_version(), "==")'
	$(PY) $(PYTEST) $(PYTEST_ARGS)

test-django42: install-django42 system-deps
	@$(PY_OLD) -c 'import django; print("== tests on Django", django.get_version(), "==")'
	$(PY_OLD) $(PYTEST) $(PYTEST_ARGS)

# Only the tests marked slow (make test runs them too); none selected is not a failure.
test-slow: install system-deps
	@$(PY) $(PYTEST) -m slow $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "test-slow: no test marked slow was selected"; exit 0; fi; \
	exit $$status

# Build the wheel, install it with only the gunicorn extra in a fresh venv, serve, check.
wheel-smoke: $(PY) system-deps
	$(PY) .ci/wheel-smoke

demo: install
	$(PY) demo_project/manage.py migrate --noinput -v 0
	$(PY) demo_project/manage.py runserver 127.0.0.1:8000

bench: install
	$(PY) bench/run.py

bench-quick: install
	$(PY) bench/run.py --quick

lint: $(PY)
	$(PY) -m ruff check geventchannels tests bench demo_project .ci/wheel-smoke
	$(PY) -m ruff format --check geventchannels tests bench demo_project .ci/wheel-smoke
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(VENV_OLD) bench/.venv-anchors build dist *.egg-info
