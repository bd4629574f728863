# The README's commands. Everything installs its own dependencies first.
#   make run     build and start sluiced with config/dev.toml (foreground)
#   make test    unit + integration tests, and a short fuzz run
#   make bench   micro-benchmarks and the end-to-end relay figure (not part of make test)
#   make asan    unit + integration tests under ASan+UBSan (second build dir)
#   make interop tests against Postfix, Dovecot and dnsmasq (installs them)
#   make bench-compare  Sluice vs a private Postfix vs the smtp-source -> smtp-sink ceiling (root)
#   make profile        perf profile of sluiced relaying smtp-source -> smtp-sink (root)
#   make bench-abuse    hostile clients (1,000 connections) against sluiced: memory and latency
#   make bench-queue    100k, 1M and 10M messages queued: memory, spool size, restart, drain
#   make lint    clang-format check of every C++ file and clang-tidy on every source (fails on a finding)

BUILD ?= build
MESON_OPTS ?= -Dwerror=true

.PHONY: all deps build run test unit integration interop fuzz-smoke bench bench-compare bench-abuse bench-queue profile asan lint clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	scripts/dev-setup
	exec $(BUILD)/gateway/sluiced --config config/dev.toml

unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

integration: build
	meson test -C $(BUILD) --suite integration --print-errorlogs

test: build fuzz-smoke
	meson test -C $(BUILD) --suite unit --suite integration --print-errorlogs

interop: build
	@scripts/install-deps --interop
	meson test -C $(BUILD) --suite interop --print-errorlogs

# libFuzzer targets (clang), a few seconds each over the committed corpus.
fuzz-smoke: deps
	scripts/fuzz-smoke

bench: build
	scripts/run-bench $(BUILD)

bench-compare: build
	@scripts/install-deps --interop
	bench/compare/run --build $(BUILD)

bench-abuse: build
	bench/abuse/run --build $(BUILD)

bench-queue: build
	@scripts/install-deps --interop
	bench/queue/run --build $(BUILD) --out-dir bench/results

profile: build
	@scripts/install-deps --profile
	bench/profile/run --mode conn --build $(BUILD)
	bench/profile/run --mode reuse --build $(BUILD)

asan: deps
	@test -f build-asan/build.ninja || CC=gcc CXX=g++ meson setup build-asan \
	  -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false -Dbuildtype=debug
	ninja -C build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  meson test -C build-asan --suite unit --suite integration --print-errorlogs --timeout-multiplier 3

lint: build
	@scripts/install-deps --lint
	scripts/lint $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
