# Every developer workflow step lives here or in scripts/.
.PHONY: setup test demo lint lock lock-upgrade bench bench-compare screenshots clean

setup:
	scripts/setup

test:
	scripts/test

demo:
	scripts/demo $(ARGS)

lint:
	scripts/setup && .venv/bin/ruff check collector drivers buffer sim sink tests bench

# Hashed lock files in requirements/ (setup and CI install only from them): `make lock`
# after a change to the dependencies in pyproject.toml, `make lock-upgrade` to move every
# pin to the newest release; review the diff and run `make test` before committing.
lock:
	scripts/lock

lock-upgrade:
	scripts/lock --upgrade

# Benchmarks (not tests): make bench [ARGS="line --quick"]; results in bench/out/ (ignored)
bench:
	bench/run $(ARGS)

# Node-RED (both flows) and this daemon on the harness in ../shared/nodered-bench
WORKLOAD ?= default
DURATION ?= 60
bench-compare:
	bench/compare --workload $(WORKLOAD) --duration $(DURATION)

# the line-side screen's screenshots in docs/screen/ (docs/operators.md): real browser
screenshots:
	scripts/screenshots

clean:
	rm -rf .venv .venv-lock .pytest_cache .ruff_cache .hypothesis
