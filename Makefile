# NestBench — two commands on a fresh Debian 12 machine:
#   make demo   installs what is needed and runs Suites/quickstart.yaml
#   make test   installs what is needed, lints, builds and runs the tests
SWIFT    ?= swift
BIN      := .build/debug/nestbench
APT_PKGS := gcc make libc6-dev libpfm4-dev libcurl4-openssl-dev libsqlite3-dev python3 python3-numpy tar \
            qemu-system-x86 busybox-static linux-image-amd64 xz-utils cpio chromium \
            slurmctld slurmd slurm-client munge

.PHONY: all deps build demo demo-fragmented test check lint format bench harness clean nested-smoke align-smoke fuzz stress cluster-demo scenario-ksm scenario-double-paging scenario-restore

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
	cc -O2 -Wall -Wextra -o .build/harness/nb-fragment Harness/fragment/nb-fragment.c

demo: build
	$(BIN) run Suites/quickstart.yaml

# The micro on clean vs fragmented memory (FMFI(9) ≈ 0.9); 5–10 repetitions, about 7 minutes on 24 GiB.
demo-fragmented: build
	$(BIN) run Suites/quickstart-fragmented.yaml

# 3-layer stacks (L0 host hypervisor, L1, L2), vanilla vs stock THP, the micro in L2. On a machine
# without hardware virtualization L0 is an emulated host: the report says "functional only".
nested-smoke: build
	$(BIN) run Suites/nested-smoke.yaml --fixed-repetitions

# Suites/cluster-demo.yaml as 2 shards through Slurm on a loopback cluster (munged, slurmctld, slurmd
# started under a temporary directory, stopped by pid at the end), merged; prints the campaign report.
cluster-demo: build
	Harness/slurm/cluster-demo.sh $(BIN)

# Cross-layer huge-page alignment on 3-layer stacks (aligned, misaligned, guest-base): the micro in
# L2 probed at every layer; the report shows align.well_aligned beside the micro's throughput.
align-smoke: build
	$(BIN) run Suites/align-smoke.yaml --fixed-repetitions

lint:
	$(SWIFT) format lint --strict -r Sources Tests Package.swift

format:
	$(SWIFT) format format -i -r Sources Tests Package.swift

test: deps lint
	$(SWIFT) build --product nestbench
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# The quick loop: everything but the tests that boot VM stacks (NESTBENCH_SKIP_VM=1) and the Slurm
# cluster test (NESTBENCH_SKIP_SLURM=1), under 5 minutes.
check: deps lint
	$(SWIFT) build --build-tests
	NESTBENCH_SKIP_VM=1 NESTBENCH_SKIP_SLURM=1 $(SWIFT) test --skip-build

# Speed and memory targets, each against a reference measured in the same run (release build).
bench: deps
	$(SWIFT) build -c release --product nestbench-bench
	.build/release/nestbench-bench $(BENCH)

# Mutation fuzzing of every parser (experiment YAML, lats.bin, PARSEC log, buddyinfo, import JSON,
# cpulist) for FUZZ_SECONDS each. An input that traps is written to Tests/Corpus/<target>/crash-*
# and replayed by `make test` (CoreTests "fuzz regression corpus").
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := yaml lats parsec buddyinfo import cpulist
# A debug build: Swift's runtime checks and debug assertions on, and no second build tree.
fuzz:
	$(SWIFT) build --product nestbench-fuzz
	@fail=0; for t in $(FUZZ_TARGETS); do \
		.build/debug/nestbench-fuzz $$t $(FUZZ_SECONDS) Tests/Corpus/$$t $$(ls ../shared/fixtures/parsec/* ../shared/fixtures/procfs/*/buddyinfo* Suites/*.yaml 2>/dev/null | head -40) || fail=1; \
	done; exit $$fail

# The Ctrl-C/SIGTERM stress test with many more trials than `make test` runs.
stress:
	$(SWIFT) build --product nestbench
	$(SWIFT) build --build-tests
	NESTBENCH_STRESS_TRIALS=$${NESTBENCH_STRESS_TRIALS:-1000} NESTBENCH_STRESS_SECONDS=$${NESTBENCH_STRESS_SECONDS:-1800} \
		$(SWIFT) test --skip-build --filter InterruptStress

clean:
	rm -rf .build

# Memory-overcommit scenarios: THP vs KSM under host memory pressure, and double paging (guest and
# host both swapping); functional only under an emulated host.
scenario-ksm: build
	$(BIN) run Suites/scenario-ksm.yaml --fixed-repetitions --all-metrics
scenario-double-paging: build
	$(BIN) run Suites/scenario-double-paging.yaml --fixed-repetitions --all-metrics
# A guest saved and restored (eagerly) while the micro runs in it: restore_seconds, ttr_seconds,
# degraded_ops; functional only without hardware virtualization (L1 under TCG on this machine).
scenario-restore: build
	$(BIN) run Suites/scenario-restore.yaml --fixed-repetitions --all-metrics
