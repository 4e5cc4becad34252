# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A real 5 s clip with AAC audio that ships inside the gradio wheel (480x270, 30 fps).
SAMPLE = $$($(BIN)/python -c 'import gradio, os; print(os.path.join(os.path.dirname(gradio.__file__), "media_assets", "videos", "b.mp4"))')

.PHONY: install browser dicom3tools slurm demo test test-slow test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/restore upscale "$(SAMPLE)" -o demo/sample_x4.mp4 --scale 4 --overwrite --report demo/report.json
	@echo "output: $(CURDIR)/demo/sample_x4.mp4"

# Tools from Debian that some tests drive: the browser test Chromium (never `playwright install`: it
# downloads browsers), the DICOM output check dciodvfy (dicom3tools). On a fresh machine they are
# installed here when we are root (CI); anyone else is told the one command to run.
# $(call debian_tool,CHECK,PACKAGE,USER): CHECK is a shell test that the tool is there.
define debian_tool
	@$(1) >/dev/null 2>&1 || \
	if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian $(2) for $(3)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	else \
		echo "$(3) needs Debian's $(2); run:  sudo apt-get install -y $(2)" >&2; exit 1; \
	fi
endef

browser:
	$(call debian_tool,command -v chromium >/dev/null 2>&1 || command -v chromium-browser,chromium,the browser test)

dicom3tools:
	$(call debian_tool,command -v dciodvfy,dicom3tools,the DICOM output check)

# The srun launch test (slow) needs a SLURM cluster: a one-node one on this machine (as root).
slurm:
	$(call debian_tool,command -v slurmctld,slurm-wlm,the SLURM launch test)
	@if [ "$$(id -u)" -eq 0 ]; then .ci/slurm-one-node; else sinfo >/dev/null 2>&1 || \
		{ echo "the SLURM launch test needs a running cluster; as root run:  .ci/slurm-one-node" >&2; exit 1; }; fi

# pytest exits 5 when no test is collected; that is not a failure of the suite.
test: browser dicom3tools $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-slow: dicom3tools slurm $(STAMP)
	$(BIN)/python -m pytest -q -m slow; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-all: browser dicom3tools slurm $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/restore bench io

clean:
	rm -rf demo .pytest_cache
