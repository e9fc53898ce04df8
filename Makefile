# geventchannels developer commands. `make install test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test demo bench bench-quick lint system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e ".[test]"

# redis-server is needed by the Redis layer tests and chromium by the demo's browser test;
# install them when we are root, else say what to do.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (needed by the Redis tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is not on PATH: install it (Debian/Ubuntu: sudo apt-get install redis-server)"; exit 1; \
	  fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (needed by the demo's browser test)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is not on PATH: install it (Debian: sudo apt-get install chromium)"; exit 1; \
	  fi; }

# Tests run with gevent's monkey patching applied before pytest imports anything.
test: install system-deps
	$(PY) -m gevent.monkey --module pytest $(PYTEST_ARGS)

demo: install
	$(PY) demo_project/manage.py migrate --noinput -v 0
	$(PY) demo_project/manage.py runserver 127.0.0.1:8000

bench: install
	$(PY) bench/run.py

bench-quick: install
	$(PY) bench/run.py --quick

lint: $(PY)
	$(PY) -m ruff check geventchannels tests bench demo_project
	$(PY) -m ruff format --check geventchannels tests bench demo_project
	$(PY) -m mypy

clean:
	rm -rf $(VENV) bench/.venv-anchors build dist *.egg-info
