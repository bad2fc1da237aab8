# The two commands of the README. Both install what they need on a brand-new Debian machine.
#   make test   - system packages, .venv with the project and dev extras, the whole suite
#   make lab    - the namespace demo (the spine-leaf lab replaces it, see docs/lab.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the tests and the lab run for real.
APT_PACKAGES := frr iproute2 iputils-ping procps psmisc containernetworking-plugins \
	docker.io busybox-static nftables python3-venv

.PHONY: test lab soak bench system venv venv-exabgp4 debian-exabgp lint clean

system:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,lab]'
	touch $@

venv: $(VENV)/.installed

# ExaBGP 4.2.21 (what Debian 12 ships) for the contract tests that pin 4.x behaviour.
EXABGP4_VENV := .venv-exabgp4
$(EXABGP4_VENV)/.installed:
	$(PYTHON) -m venv $(EXABGP4_VENV)
	$(EXABGP4_VENV)/bin/pip install -q exabgp==4.2.21
	touch $@

venv-exabgp4: $(EXABGP4_VENV)/.installed

# Debian 12's own ExaBGP 4.2.21 packages, downloaded, not installed: tests/test_readme_literal.py
# (its fixture runs this target) installs them with apt-get inside a private mount namespace,
# as docs/exabgp.md tells a Debian user to. Fetched again when apt's candidate changes.
DEBIAN_EXABGP := .cache/debian-exabgp
# With what exabgp depends on, in case this machine lacks some (apt takes them from its cache).
DEBIAN_EXABGP_PACKAGES := exabgp python3-exabgp lsb-base python3-pkg-resources ucf adduser
debian-exabgp:
	@mkdir -p $(DEBIAN_EXABGP) && cd $(DEBIAN_EXABGP) && \
	for p in $(DEBIAN_EXABGP_PACKAGES); do \
	  v=$$(apt-cache policy $$p 2>/dev/null | awk '/Candidate:/ {print $$2}'); \
	  if [ -z "$$v" ] || [ "$$v" = "(none)" ]; then apt-get update -qq; \
	    v=$$(apt-cache policy $$p | awk '/Candidate:/ {print $$2}'); fi; \
	  ls $${p}_$${v/:/%3a}_*.deb >/dev/null 2>&1 || apt-get download -q $$p || exit 1; \
	done

lint: venv
	$(VENV)/bin/ruff check announcer tests bench
	$(VENV)/bin/ruff format --check announcer tests bench
	$(VENV)/bin/mypy

test: system venv venv-exabgp4
	$(VENV)/bin/ruff check announcer tests bench
	$(VENV)/bin/ruff format --check announcer tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Benchmarks vs FRR, BIRD and ExaBGP alone (docs/performance.md): ~20 min on a quiet
# machine; BENCH_ARGS=--quick for ~5.
# Debian's bird2 package starts a bird in the root namespace: it is stopped at once.
bench: system venv
	@dpkg-query -W -f='$${Status}' bird2 2>/dev/null | grep -q "ok installed" || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bird2; \
	  systemctl disable --now bird.service 2>/dev/null || true; }
	$(PY) -m bench $(BENCH_ARGS)

# The fault suite's soak for 30 minutes (CI runs it for 2).
soak: system venv
	SOAK_SECONDS=1800 $(VENV)/bin/pytest -s tests/faults/test_soak.py

lab: system venv
	$(PY) -m announcer.lab all labs/spine-leaf.clab.yml

clean:
	rm -rf $(VENV) $(EXABGP4_VENV) .pytest_cache .mypy_cache .ruff_cache

# Container images from a Debian base made here (debootstrap, then `docker import`) and wheels
# downloaded here: no registry image and no network inside the build (docs/image.md).
# Needs root; builds on docker's default engine, or DOCKER_HOST's.
IMAGE ?= anycast-announcer
LAB_IMAGE ?= anycast-announcer-lab:dev
.PHONY: image image-lab

image:
	PYTHON=$(PYTHON) packaging/image/build.sh product $(IMAGE)

image-lab:
	PYTHON=$(PYTHON) packaging/image/build.sh lab $(LAB_IMAGE)
