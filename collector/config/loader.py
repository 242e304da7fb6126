"""Reading a config dir: TOML files -> validated models -> :class:`LoadedConfig`.

Every problem of every file is collected before anything is raised, so that a user fixes
them all in one go (:class:`ConfigError` carries the list). Checks that span files live
here: unique press ids, unique (part number, revision), a plan's gauge must exist, presses
sharing an RTU bus must agree on it. Relative paths (buffer, OPC UA certificates) are made
absolute against the config dir.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from collector import domain, mqtt_names
from collector.config.errors import ConfigError, ConfigProblem, translate
from collector.config.plan import PlanConfig, revision_key, to_plan
from collector.config.press import PressConfig
from collector.config.site import CollectorConfig
from drivers.config_base import show
from drivers.registry import plc_plugin

COLLECTOR_FILE = "collector.toml"
PRESSES_DIR = "presses"
PLANS_DIR = "plans"

M = TypeVar("M", bound=BaseModel)


@dataclass
class LoadedConfig:
    """A validated config dir.

    ``plans`` maps part number -> the plan with the highest revision (see
    :func:`revision_key`); ``plans_all`` keeps every (part_number, revision).
    """

    config_dir: Path
    collector: CollectorConfig
    presses: dict[str, PressConfig]
    plans: dict[str, domain.Plan]
    plans_all: dict[tuple[str, str], domain.Plan] = field(default_factory=dict)
    press_files: dict[str, str] = field(default_factory=dict)   # press id -> file
    plan_files: dict[tuple[str, str], str] = field(default_factory=dict)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> LoadedConfig:
        """A copy with some fields replaced (same spelling as the pydantic models)."""
        return dataclasses.replace(self, **(update or {}))


def _read_toml(config_dir: Path, path: Path,
               problems: list[ConfigProblem]) -> dict[str, Any] | None:
    rel = path.relative_to(config_dir).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(ConfigProblem(rel, "", "file not found"))
        return None
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem(rel, "", f"not UTF-8 text (byte {exc.start})"))
        return None
    except OSError as exc:
        problems.append(ConfigProblem(rel, "", f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", msg, re.DOTALL)
        if match:
            where = f"line {match[2]}, column {match[3]}"
            msg = match[1]
        else:
            where = "end of file"
            msg = msg.removesuffix(" (at end of document)")
        problems.append(ConfigProblem(rel, "", f"TOML syntax error at {where}: {msg}"))
        return None


def _validate(model: type[M], data: dict[str, Any], rel: str,
              problems: list[ConfigProblem]) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            for key_path, message in translate(model, error):
                problems.append(ConfigProblem(rel, key_path, message))
        return None


def _load_file(config_dir: Path, path: Path, model: type[M],
               problems: list[ConfigProblem]) -> M | None:
    data = _read_toml(config_dir, path, problems)
    if data is None:
        return None
    return _validate(model, data, path.relative_to(config_dir).as_posix(), problems)


def _load(config_dir: Path) -> tuple[LoadedConfig | None, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    if not config_dir.is_dir():
        return None, [ConfigProblem(str(config_dir), "", "config directory not found")]

    collector_path = config_dir / COLLECTOR_FILE
    collector: CollectorConfig | None = None
    if not collector_path.is_file():
        problems.append(ConfigProblem(COLLECTOR_FILE, "", "file not found (a config dir holds "
                                      "collector.toml, presses/*.toml and plans/*.toml)"))
    else:
        collector = _load_file(config_dir, collector_path, CollectorConfig, problems)
    if collector is not None and not collector.site.host_id:
        problems.extend(_hostname_problems())

    press_paths = sorted((config_dir / PRESSES_DIR).glob("*.toml"))
    if not press_paths:
        problems.append(ConfigProblem(f"{PRESSES_DIR}/", "", "no press files found "
                                      "(add presses/<id>.toml, one per press)"))
    presses: dict[str, PressConfig] = {}
    press_files: dict[str, str] = {}
    gauge_ids: set[str] = set()
    valid_presses = 0
    for path in press_paths:
        press = _load_file(config_dir, path, PressConfig, problems)
        if press is None:
            continue
        valid_presses += 1
        gauge_ids.update(g.id for g in press.gauges)
        rel = path.relative_to(config_dir).as_posix()
        if press.id in presses:
            problems.append(ConfigProblem(rel, "id", f"{show(press.id)} is already used by "
                                          f"{press_files[press.id]} (press ids must be "
                                          "unique)"))
            continue
        presses[press.id] = press
        press_files[press.id] = rel
    problems.extend(_check_buses(presses, press_files))
    # A plan may name a gauge only if some press has it. Checked only when every press file
    # is valid, so that one mistake in a press file does not show up again in every plan.
    check_gauges = bool(press_paths) and valid_presses == len(press_paths)
    known_gauges = ", ".join(sorted(gauge_ids)) or "no press has gauges"

    plans_all: dict[tuple[str, str], domain.Plan] = {}
    plan_files: dict[tuple[str, str], str] = {}
    for path in sorted((config_dir / PLANS_DIR).glob("*.toml")):
        plan = _load_file(config_dir, path, PlanConfig, problems)
        if plan is None:
            continue
        rel = path.relative_to(config_dir).as_posix()
        ok = True
        if check_gauges:
            for i, ch in enumerate(plan.characteristics):
                if ch.gauge is not None and ch.gauge not in gauge_ids:
                    problems.append(ConfigProblem(
                        rel, f"characteristics[{i}].gauge", f"{show(ch.gauge)} is not a "
                        f"gauge of any press (gauges: {known_gauges})"))
                    ok = False
        key = (plan.part_number, plan.revision)
        if key in plans_all:
            problems.append(ConfigProblem(rel, "revision", f"part_number "
                                          f"{show(plan.part_number)} revision "
                                          f"{show(plan.revision)} is already defined in "
                                          f"{plan_files[key]} (plans must be unique by "
                                          "part_number and revision)"))
            continue
        if ok:
            plans_all[key] = to_plan(plan)
            plan_files[key] = rel

    if problems or collector is None:
        return None, problems

    buffer_path = Path(collector.buffer.path)
    if not buffer_path.is_absolute():
        collector.buffer.path = str((config_dir / buffer_path).resolve())
    for press in presses.values():
        press.plc.resolve_paths(config_dir)  # files named in [plc] (OPC UA certificates)

    plans: dict[str, domain.Plan] = {}
    for (part_number, _revision), plan in sorted(
            plans_all.items(), key=lambda item: (item[0][0], revision_key(item[0][1]))):
        plans[part_number] = plan  # ascending revision order: the highest one wins
    return LoadedConfig(config_dir=config_dir, collector=collector, presses=presses,
                        plans=plans, plans_all=plans_all, press_files=press_files,
                        plan_files=plan_files), []


def _hostname_problems() -> list[ConfigProblem]:
    """site.host_id defaults to the hostname, which the daemon puts in its topics: check it
    here, so that ``check`` refuses what ``run`` would publish under a broken topic."""
    import socket

    name = socket.gethostname()
    problem = mqtt_names.topic_level_problem(name, show(name))
    if problem is None:
        return []
    return [ConfigProblem(COLLECTOR_FILE, "site.host_id", f"not set, and this machine's "
                          f"hostname {problem}: set site.host_id")]


def _check_buses(presses: dict[str, PressConfig],
                 press_files: dict[str, str]) -> list[ConfigProblem]:
    """Presses on one RTU bus (same serial port or host:port) share one connection: their
    unit ids must differ and, on a serial port, their line settings must agree."""
    problems: list[ConfigProblem] = []
    first_on_bus: dict[str, PressConfig] = {}
    units: dict[tuple[str, int], str] = {}
    for press in presses.values():
        key = press.plc.bus_key()
        if key is None:
            continue
        rel = press_files[press.id]
        first = first_on_bus.setdefault(key, press)
        if (key, press.plc.unit) in units:
            other = units[(key, press.plc.unit)]
            problems.append(ConfigProblem(rel, "plc.unit", f"{press.plc.unit} is already used "
                                          f"on bus {key} by press {other} "
                                          f"({press_files[other]}); unit ids must be unique "
                                          "per bus"))
        else:
            units[(key, press.plc.unit)] = press.id
        if first is press:
            continue
        if first.plc.protocol != press.plc.protocol:
            problems.append(ConfigProblem(rel, "plc.protocol", f"bus {key} is "
                                          f"{first.plc.protocol} in {press_files[first.id]}"))
            continue
        for name in type(first.plc).shared_line_keys:
            mine, theirs = getattr(press.plc, name), getattr(first.plc, name)
            if mine != theirs:
                problems.append(ConfigProblem(rel, f"plc.{name}", f"{show(mine)} differs from "
                                              f"{show(theirs)} of press {first.id} "
                                              f"({press_files[first.id]}) on the same bus "
                                              f"{key}"))
    return problems


def load_config(config_dir: Path | str) -> LoadedConfig:
    """Load and validate a config dir; raise :class:`ConfigError` listing every problem."""
    loaded, problems = _load(Path(config_dir))
    if problems or loaded is None:
        raise ConfigError(problems)
    return loaded


def load_press_file(path: Path | str) -> PressConfig:
    """One press file on its own (commissioning probe); :class:`ConfigError` lists its
    problems, named by the file's name."""
    path = Path(path).absolute()
    problems: list[ConfigProblem] = []
    data = _read_toml(path.parent, path, problems)
    press = _validate(PressConfig, data, path.name, problems) if data is not None else None
    if press is None:
        raise ConfigError(problems)
    return press


def check(config_dir: Path | str) -> list[str]:
    """Every problem of a config dir as ``file: key.path: message`` lines; [] = valid."""
    _, problems = _load(Path(config_dir))
    return [str(p) for p in problems]


def summary(config: LoadedConfig | Path | str) -> str:
    """A short human report of a (valid) config for ``press-collector check``."""
    cfg = config if isinstance(config, LoadedConfig) else load_config(config)
    col = cfg.collector
    n_tags = sum(len(p.plc.tags) for p in cfg.presses.values())
    n_gauges = sum(len(p.gauges) for p in cfg.presses.values())
    lines = [
        f"config {cfg.config_dir}: ok",
        f"site {col.site.name!r}, topic root {col.site.topic_root!r}, "
        f"broker {col.broker.host}:{col.broker.port}, buffer {col.buffer.path}",
        f"{len(cfg.presses)} presses, {n_tags} tags, {n_gauges} gauges, "
        f"{len(cfg.plans_all)} plans ({len(cfg.plans)} part numbers)",
    ]
    for press in cfg.presses.values():
        plc = press.plc
        roles = ", ".join(t.role for t in plc.tags if t.role) or "none"
        gauges = ", ".join(f"{g.id} ({g.preset} {g.port})" for g in press.gauges) or "none"
        title = f" {press.name}" if press.name else ""
        link = plc_plugin(plc.protocol).load().summary(plc)  # the driver package's words
        outputs = ", ".join(o.role for o in getattr(plc, "outputs", ()))  # optional
        outputs = f"; outputs: {outputs}" if outputs else ""
        lines.append(f"  press {press.id}{title}: {link}, {len(plc.tags)} tags "
                     f"(roles: {roles}); gauges: {gauges}{outputs}")
    for part_number, plan in sorted(cfg.plans.items()):
        lines.append(f"  plan {part_number} rev {plan.revision}: "
                     f"{len(plan.characteristics)} characteristics")
    return "\n".join(lines)
