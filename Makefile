VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench pretrained clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) scripts/bench_multislice.py

pretrained: $(STAMP)  # retrain the built-in models shipped in learners/pretrained/
	$(PY) scripts/pretrain_atomfinder.py --data build/graphene-atomfinder --out build/atomfinder-stage1.twin
	$(PY) scripts/pretrain_atomfinder.py --data build/graphene-atomfinder --init build/atomfinder-stage1.twin \
		--lr 1e-3 --epochs 24 --lattice
	$(PY) scripts/pretrain_fewshot.py

clean:
	rm -rf $(VENV) build *.egg-info
