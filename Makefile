# NestBench — two commands on a fresh Debian 12 machine:
#   make demo   installs what is needed and runs Suites/quickstart.yaml
#   make test   installs what is needed, lints, builds and runs the tests
SWIFT    ?= swift
BIN      := .build/debug/nestbench
APT_PKGS := gcc make libc6-dev libpfm4-dev libcurl4-openssl-dev libsqlite3-dev python3 chromium

.PHONY: all deps build demo test lint format bench harness clean

all: build

# Debian packages: installed only when missing (root, or sudo when available).
deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build --product nestbench

# The C harness, also compiled by nestbench itself on first use into ~/.cache/nestbench.
harness:
	mkdir -p .build/harness
	cc -O2 -Wall -Wextra -o .build/harness/nb-micro Harness/micro/nb-micro.c

demo: build
	$(BIN) run Suites/quickstart.yaml

lint:
	$(SWIFT) format lint --strict -r Sources Tests Package.swift

format:
	$(SWIFT) format format -i -r Sources Tests Package.swift

test: deps lint
	$(SWIFT) build --product nestbench
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# Speed and memory targets, each against a reference measured in the same run (release build).
bench: deps
	$(SWIFT) build -c release --product nestbench-bench
	.build/release/nestbench-bench $(BENCH)

clean:
	rm -rf .build
