# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv and install first.
# CPU machines install torch from constraints-cpu.txt (the CPU wheel); GPU hosts: `make install GPU=1`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints-cpu.txt
EXTRAS ?= test
# the CPU torch wheel lies in /opt/wheels on our build machines; elsewhere pip finds it on its index
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check $(FIND_LINKS)
DEMO_DIR ?= demo-out

.PHONY: demo test install lint clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
ifdef GPU
	$(PIP_INSTALL) -e '.[$(EXTRAS),gpu]'
else
	$(PIP_INSTALL) -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
endif
	@touch $@

install: $(VENV)/.installed

# The main job on the embedded default: build the demo bundle from simulated data on first use (cached),
# then stream an unseen simulated subject through BrainFlow's playback board in real time and summarise.
# The recording (DEMO_MINUTES, default 5) holds a block of every class; deploy stops at its end, so the run
# covers all of them. DEMO_SECONDS=N stops sooner (and may end before the last class's block).
DEMO_MINUTES ?= 5
DEMO_SECONDS ?=
demo: $(VENV)/.installed
	@mkdir -p $(DEMO_DIR)
	$(VENV)/bin/edge-bridge deploy --device cpu --demo-minutes $(DEMO_MINUTES) \
		$(if $(DEMO_SECONDS),--duration $(DEMO_SECONDS),) --out $(DEMO_DIR)/predictions.jsonl \
		--summary-json $(DEMO_DIR)/summary.json

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
