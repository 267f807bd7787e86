# Two commands set everything up: `make demo` and `make test` create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
DEMO := demo_out

.PHONY: test demo venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

# BA over a lambda sweep on a 2-d Gaussian, drawn against its analytic R(D).
demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) ba.py --samples gaussian --data_dim 2 --num_samples 1000000 --bins 100 --steps 2000 --tol 1e-7 \
		--lamb 1.2 1.5 2 3 5 10 20 50 --save_dir $(DEMO)
	$(PY) plot_rd.py --checkpoint_dir $(DEMO) --out $(DEMO)/sandwich --title "2-d Gaussian"
