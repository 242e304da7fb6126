"""Dependencies you can audit: floors past the known advisories, and hashed lock files
(requirements/*.txt, `make lock`) that agree with pyproject.toml and with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCKS = {name: REPO / "requirements" / f"{name}.txt" for name in ("runtime", "dev", "build")}
# The first release past the advisories listed in docs/security.md, "Dependencies".
FLOORS = {"orjson": "3.9.15", "cryptography": "44.0.1", "asyncua": "1.1.6",
          "pydantic": "2.4", "pyyaml": "5.4", "setuptools": "78.1.1", "pip": "25.3",
          "aiohttp": "3.14.1", "protobuf": "6.31.1"}
# Imported by the code (collector/, drivers/, buffer/) -> must be declared, not inherited.
IMPORTED = {"cryptography", "asyncua", "pymodbus", "paho-mqtt", "pydantic", "orjson",
            "sqlite-utils", "pyserial", "pyserial-asyncio-fast", "aiohttp", "protobuf"}


def pins(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of a pip-compile --generate-hashes file."""
    out: dict[str, tuple[Version, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line)
        if match:
            name = canonicalize_name(match[1])
            out[name] = (Version(match[2]), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            out[name] = (out[name][0], out[name][1] + 1)
        elif not line.startswith(" "):
            name = None
    return out


def declared(extra: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    items = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(text) for text in items]


def test_every_pin_is_hashed_and_the_locks_agree() -> None:
    locked = {name: pins(path) for name, path in LOCKS.items()}
    for name, table in locked.items():
        assert table, f"{name}.txt has no pins"
        unhashed = [pkg for pkg, (_v, hashes) in table.items() if hashes == 0]
        assert not unhashed, f"{name}.txt: no hashes for {unhashed}"
    for pkg, (version, _h) in locked["runtime"].items():
        assert locked["dev"][pkg][0] == version, f"{pkg}: runtime.txt and dev.txt differ"
    for pkg in ("pip", "setuptools"):
        assert pkg in locked["build"]


def test_locks_satisfy_pyproject() -> None:
    runtime, dev = pins(LOCKS["runtime"]), pins(LOCKS["dev"])
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in runtime, f"{name} is declared but not in requirements/runtime.txt"
        assert req.specifier.contains(runtime[name][0]), f"{name} {runtime[name][0]} vs {req}"
    for req in declared("test"):
        name = canonicalize_name(req.name)
        assert name in dev and req.specifier.contains(dev[name][0]), name
    build = Requirement(PYPROJECT["build-system"]["requires"][0])
    assert build.specifier.contains(pins(LOCKS["build"])["setuptools"][0])


def test_floors_are_past_the_known_advisories_and_used_packages_are_declared() -> None:
    reqs = {canonicalize_name(r.name): r for r in [*declared(), *declared("test"),
                                                   *map(Requirement,
                                                        PYPROJECT["build-system"]["requires"])]}
    build_in = (REPO / "requirements" / "build.in").read_text()
    for line in build_in.splitlines():
        text = line.split("#")[0].strip()
        if text:
            reqs[canonicalize_name(Requirement(text).name)] = Requirement(text)
    for name, floor in FLOORS.items():
        req = reqs[canonicalize_name(name)]
        floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        assert floors and max(floors) >= Version(floor), f"{name}: {req} (needs >= {floor})"
        assert not req.specifier.contains(_below(floor)), f"{name}: {req} lets {_below(floor)} in"
    missing = {canonicalize_name(n) for n in IMPORTED} - set(reqs)
    assert not missing, f"imported but not declared: {missing}"


def _below(version: str) -> str:
    """A version just below ``version`` (e.g. 3.9.15 -> 3.9.14), which the floor must refuse."""
    parts = [int(p) for p in version.split(".")]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] > 0:
            parts[i] -= 1
            break
    return ".".join(map(str, parts))
