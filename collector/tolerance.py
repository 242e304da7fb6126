"""Pure tolerance arithmetic: parse a gauge value, convert length units, judge a limit.

Everything is ``Decimal``; nothing here rounds a value before it is judged. The three
length units the gauges speak (mm, in, um) are all whole multiples of the micrometre
(1 in = 25.4 mm = 25 400 um exactly), so the verdict is computed exactly in micrometres.
Only the *reported* value may be rounded, and only when converting *to* inches (a
division that rarely terminates): it is rounded to the resolution of the reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext

# Micrometres per unit. Every supported unit is an exact multiple of the micrometre.
_UM_PER_UNIT = {"mm": Decimal(1000), "in": Decimal(25400), "um": Decimal(1)}

_ALIASES = {
    "mm": "mm", "millimeter": "mm", "millimetre": "mm", "millimeters": "mm",
    "millimetres": "mm",
    "in": "in", "inch": "in", "inches": "in", '"': "in",
    "um": "um", "µm": "um", "μm": "um", "micron": "um", "microns": "um",
    "micrometer": "um", "micrometre": "um", "micrometers": "um", "micrometres": "um",
}

# Values outside this decimal exponent range are rejected as implausible (and would
# make exact arithmetic expensive or overflow).
_MAX_EXPONENT = 30
_PREC = 80  # digits: far more than any exact product of in-range values needs

PASS = "pass"
FAIL = "fail"


class UnitError(ValueError):
    """The reading's unit is unknown or cannot be converted to the characteristic's."""


def normalize_unit(unit: object) -> str | None:
    """Canonical unit name ('mm', 'in', 'um') or None when unknown."""
    if not isinstance(unit, str):
        return None
    return _ALIASES.get(unit.strip().lower())


def parse_value(value: object) -> Decimal | None:
    """A gauge value as a finite Decimal, or None when it is not a plausible number.

    Accepts decimal strings (leading '+' or '-', surrounding whitespace), ints and
    Decimals. Floats are refused: a gauge value is a decimal string by contract.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except (InvalidOperation, ValueError):
            return None
    else:
        return None
    if not d.is_finite():
        return None
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -_MAX_EXPONENT or d.adjusted() > _MAX_EXPONENT:
        return None
    return d


def _resolution_exponent(value: Decimal, from_unit: str, to_unit: str) -> int:
    """Decimal exponent of one resolution step of ``value`` expressed in ``to_unit``."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    step_um = Decimal(1).scaleb(exponent) * _UM_PER_UNIT[from_unit]
    return (step_um / _UM_PER_UNIT[to_unit]).adjusted()


def convert(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """Convert a length between mm / in / um.

    Exact except towards inches, where the result is rounded to the reading's
    resolution (one step of the source value expressed in inches, rounded down to a
    power of ten). Trailing zeros beyond the resolution are dropped when exact.
    Raises ``UnitError`` for an unknown unit.
    """
    src, dst = normalize_unit(from_unit), normalize_unit(to_unit)
    if src is None or dst is None:
        raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}")
    if src == dst:
        return value
    with localcontext() as ctx:
        ctx.prec = _PREC
        exact = value * _UM_PER_UNIT[src] / _UM_PER_UNIT[dst]
        quantum = Decimal(1).scaleb(_resolution_exponent(value, src, dst))
        rounded = exact.quantize(quantum)
        if rounded == exact or dst == "in":
            return rounded
        tidy = exact.normalize()  # has digits below the quantum: no zeros lost there
        exponent = tidy.as_tuple().exponent
        assert isinstance(exponent, int)
        return tidy if exponent <= 0 else tidy.quantize(Decimal(1))


@dataclass(frozen=True, slots=True)
class Check:
    """A value judged against a characteristic: all in the characteristic's unit."""

    value: Decimal
    verdict: str  # 'pass' | 'fail'
    deviation: Decimal  # value - nominal


def within(value: Decimal, lsl: Decimal | None, usl: Decimal | None) -> bool:
    """lsl <= value <= usl, inclusive; a missing limit does not constrain."""
    if lsl is not None and value < lsl:
        return False
    return not (usl is not None and value > usl)


def check(
    raw: Decimal,
    raw_unit: str,
    unit: str,
    nominal: Decimal,
    lsl: Decimal | None,
    usl: Decimal | None,
) -> Check:
    """Judge a reading ``raw`` (in ``raw_unit``) against limits given in ``unit``.

    Same unit (also for units this module does not know, compared case-insensitively):
    judged as is. Different known length units: judged exactly in micrometres, the
    reported value converted with ``convert``. Otherwise ``UnitError``.
    """
    src, dst = normalize_unit(raw_unit), normalize_unit(unit)
    same = (src is not None and src == dst) or (
        src is None and dst is None and isinstance(raw_unit, str) and isinstance(unit, str)
        and raw_unit.strip() != "" and raw_unit.strip().lower() == unit.strip().lower()
    )
    with localcontext() as ctx:
        ctx.prec = _PREC
        if same:
            value = raw
            ok = within(raw, lsl, usl)
        elif src is not None and dst is not None:
            value = convert(raw, src, dst)
            per = _UM_PER_UNIT[dst]
            ok = within(
                raw * _UM_PER_UNIT[src],
                None if lsl is None else lsl * per,
                None if usl is None else usl * per,
            )
        else:
            raise UnitError(f"reading unit {raw_unit!r} does not convert to {unit!r}")
        return Check(value=value, verdict=PASS if ok else FAIL, deviation=value - nominal)
