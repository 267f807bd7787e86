# Two commands set everything up: `make demo` and `make test` create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
DEMO := demo_out

.PHONY: test smoke demo venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(PY) -m pytest -q -rs -n 2 --dist loadfile tests

# Every script at its paper's or CPU recipe's sizes for a step or two, then its eval/compress/decompress (needs
# RDS_DATA_DIR); run it before submitting a change to a model or a trainer. tests/smoke.py says what it runs.
smoke: $(STAMP)
	$(PY) tests/smoke.py

# The sandwich on a 2-d Gaussian: BA, the beta-VAE upper bound and the dual lower bound, against the analytic R(D).
# Rates in nats per sample, D = MSE per dimension, the same lambda for every method. A few minutes on 2 cores.
DEMO_SRC := --dataset gaussian --data_dim 2
demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) ba.py --samples gaussian --data_dim 2 --num_samples 1000000 --bins 100 --steps 2000 --tol 1e-7 \
		--lamb 1.2 1.5 2 3 5 10 20 50 --save_dir $(DEMO)
	for l in 1.5 5.0 15.0; do \
		$(PY) rdub_mlp.py $(DEMO_SRC) --decoder_units 0 --prior_type gmm_1 --encoder_activation none --nats \
			--lambda $$l --checkpoint_dir $(DEMO) train --epochs 4 --steps_per_epoch 500 --lr 5e-3 --batchsize 256 \
		&& $(PY) rdub_mlp.py $(DEMO_SRC) --decoder_units 0 --prior_type gmm_1 --encoder_activation none --nats \
			--lambda $$l --checkpoint_dir $(DEMO) eval \
		&& $(PY) rdlb.py $(DEMO_SRC) --units 64,64 --lamb $$l --checkpoint_dir $(DEMO) \
			train --last_step 400 --lr 3e-3 --lr_schedule \
		&& $(PY) rdlb.py $(DEMO_SRC) --units 64,64 --lamb $$l --checkpoint_dir $(DEMO) eval --num_Ck_samples 10 \
		|| exit 1; \
	done
	$(PY) plot_rd.py --checkpoint_dir $(DEMO) --out $(DEMO)/sandwich --title "2-d Gaussian: the sandwich"
