# Every developer workflow step lives here or in scripts/.
.PHONY: setup test demo lint bench clean

setup:
	scripts/setup

test:
	scripts/test

demo:
	scripts/demo $(ARGS)

lint:
	scripts/setup && .venv/bin/ruff check collector drivers buffer tests bench

clean:
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis
