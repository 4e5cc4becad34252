# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A real 5 s clip with AAC audio that ships inside the gradio wheel (480x270, 30 fps).
SAMPLE = $$($(BIN)/python -c 'import gradio, os; print(os.path.join(os.path.dirname(gradio.__file__), "media_assets", "videos", "b.mp4"))')

.PHONY: install demo test test-slow test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/restore upscale "$(SAMPLE)" -o demo/sample_x4.mp4 --scale 4 --overwrite --report demo/report.json
	@echo "output: $(CURDIR)/demo/sample_x4.mp4"

# pytest exits 5 when no test is collected; that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/restore bench io

clean:
	rm -rf demo .pytest_cache
