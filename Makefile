# Every developer workflow step lives here or in scripts/.
.PHONY: setup test demo lint bench bench-compare clean

setup:
	scripts/setup

test:
	scripts/test

demo:
	scripts/demo $(ARGS)

lint:
	scripts/setup && .venv/bin/ruff check collector drivers buffer sink tests bench

# Benchmarks (not tests): make bench [ARGS="line --quick"]; results in bench/results/
bench:
	bench/run $(ARGS)

# Node-RED (both flows) and this daemon on the harness in ../shared/nodered-bench
WORKLOAD ?= default
DURATION ?= 60
bench-compare:
	bench/compare --workload $(WORKLOAD) --duration $(DURATION)

clean:
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis
