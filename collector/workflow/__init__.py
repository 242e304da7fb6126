"""The press workflow: setup verification, first article, release, hold. Pure.

Everything that decides a press's quality state lives in this module. ``PressWorkflow``
takes PLC polls, gauge readings and PLC connection changes, each with its acquisition
time as data (epoch seconds), and returns ``Event`` lists. No sockets, no clock, no
logging: the same inputs always give the same events, so the workflow can be tested
with plain pytest and replayed from the buffer.

The states and every allowed transition are the table ``TRANSITIONS`` just below (the
h11 habit: a table, not ``if`` chains spread over the code); ``diagram()`` renders it for
the README. Code elsewhere in the module only computes *which trigger* an input is and
then calls ``_go``, which refuses a (state, trigger) pair that is not in the table.

Semantics (including the choices made where the brief was silent)
----------------------------------------------------------------

Values. Ids (die, part number, material lot, heat number) are compared as stripped
strings; an integral float is written as an int (a scaled Modbus tag gives ``7.0`` for
die 7). ``None``, a missing role and the empty string mean *unknown*: an unknown value
never triggers anything and does not erase the last known value. A change is a known
value replacing a *different known* value; unknown -> known is learning, not a change,
except for the part number, where unknown -> known is ``job_start``. True/false roles
(setup_mode, running, repair) read their value through the press's ``RoleMap`` for the
role when it has one (a set of values, a bit of a word, enum names: docs/roles.md);
without one they accept bool, numbers (non-zero = true) and the strings 1/0,
true/false, on/off, yes/no. The ``running`` role is informational and ignored.

Start. The press is ``offline`` until its first poll. The first poll sets the baseline.
With a known part number it is a setup trigger ``job_start``; without one there is no
job to verify, so the press goes to ``awaiting_first_article`` (trigger ``first_poll``)
without a setup event, and the part number becoming known later is ``job_start``. A
setup mode or repair signal already on at the first poll is not an edge (no extra
reason), but setup mode on puts the press in ``setup``.

Setup triggers (all coinciding ones make ONE ``setup`` event with a ``reasons`` list in
the order job_start/job_change, die_change, material_change, repair, long_stop):
- die id changes -> ``die_change``; setup mode on while not in state ``setup`` (its
  rising edge) -> ``die_change``;
- part number changes -> ``job_change`` (``job_start`` from unknown);
- material lot changes -> ``material_change``; a heat number change is a material
  change too (ARCHITECTURE.md: "coil / lot / heat number changes"), so a press with only
  a heat tag still catches a coil change;
- repair signal rising edge -> ``repair``;
- the first stroke after more than ``long_stop_s`` without a stroke increase ->
  ``long_stop``. Idle is measured from the last stroke increase and includes time
  offline (also a daemon restart). Only evaluated while production is released
  (``released``, ``stopped``): in every other state a first article is pending anyway,
  and a press standing still while the first piece is measured, while it is on hold,
  or during a die change is normal, so a long stop there would only restart the
  verification for nothing (and renumber the attempts).
A trigger in any state restarts the verification: attempt counter and unreleased strokes
back to 0, an open first article discarded (``discarded_first_article: true``), the
patrol position reset. The target is ``setup`` while setup mode is on, else
``awaiting_first_article``. Setup mode dropping in ``setup`` -> ``awaiting_first_article``.

Open setup (issue 11). A setup is open from its trigger until a first-article attempt
starts (the first reading is taken) or the press is released. A trigger while a setup is
open (typically "setup mode on, then the die id changes", or the material lot entered
during the die change) amends it instead of starting another: a ``setup`` event with
``amended: true``, the reasons of the whole setup, ``added_reasons``, ``previous`` = the
ids before the setup and ``new`` = the ids now; the reasons this change carried are
annotated again (``amended: true``) in the same phase. No new phase, attempt and
unreleased strokes count on; a state change only if setup mode changed the target.

Strokes. A stroke counter increase while not released (``setup``,
``awaiting_first_article``, ``first_article``, ``hold``) adds to ``unreleased_strokes``.
The counter is read as PLCs send it (issue 11): it wraps at ``stroke_counter_wrap``
(2**16 / 2**32 from the tag type) and is counted across the wrap; a value that is not a
plausible increase (more than ``max_strokes_per_min`` allows since the last accepted
value, over at least a second; a drop, e.g. a one-poll glitch to 0 or a reset) counts
nothing, is one ``alarm`` (cause ``counter_anomaly``) per episode, and does not reset the
idle clock; the count resumes with the next value that is plausible after the last
accepted one (a glitch) or after the implausible one (a reset). ``context.stroke_count``
is the collector's count: the PLC counter's first value plus every counted stroke (equal
to the PLC counter until it wraps or is reset). Strokes seen in the same poll as a setup
trigger count for the new setup (they are after the long stop, and a poll is 100 ms). The count is
cumulative from the last setup trigger: it is not reset by a release, and strokes on a
later hold add to it.

First article. In ``awaiting_first_article`` or ``hold`` the first reading that can be
assigned starts attempt n+1 (state ``first_article``); a reading that cannot be assigned
starts nothing. Routing: the first open characteristic (plan order) whose gauge matches
and whose channel matches (or is unset); else, if no characteristic of the plan would
take that gauge/channel at all, the first open characteristic without a gauge; else
``unassigned_reading`` (``no_matching_characteristic``). Units mm / in / um convert
exactly (see ``collector.tolerance``); an unknown or unconvertible unit ->
``unassigned_reading`` (``unknown_unit``), the characteristic stays open. Limits are
inclusive, one-sided when one is None, and no limit at all passes. Only the completing
reading emits: one ``first_article`` event; pass -> ``released``, fail -> ``hold``.

Production. In ``released`` and ``stopped`` every reading is a patrol ``measurement``,
routed by the same rule but starting after the last measured characteristic and
wrapping around. ``stopped`` accepts measurements (parts from the bin of a standing
press are released parts). A fail with ``hold_on_measurement_fail`` -> ``hold``
(``action: 'hold'``), else ``action: 'none'``. ``released`` -> ``stopped`` on a poll
with no stroke increase for more than ``stopped_after_s``; the next stroke ->
``released`` (or ``long_stop``). Without a stroke_count tag neither can happen.

Readings are ``unassigned_reading`` in ``offline`` and ``setup`` (``state:<state>``);
without a plan for the (known) part, or with the part unknown, ``no_plan``; an empty
plan ``empty_plan``; a value that is not a finite decimal ``invalid_value``.

Connection. ``on_connection(False)`` -> ``offline``, the state before is remembered
(an open first article is kept); ``on_connection(True)`` -> back to it. Only a change of
the connection flag emits (``connection`` event, then ``state_change``); a repeated
report emits nothing. A poll while offline is an implicit reconnect (connection event
with reason 'poll received while offline'). The next poll decides what changed.

Events. Every event is durable (a quality record). ``Event.ts`` is the input's time.
``context`` is ``context()`` taken right after the input changed the press, so
``context.state`` is the state the event left the press in. A record and the transition
it causes are emitted record first, then ``state_change`` {from, to, cause=trigger}.
Bodies are JSON-able: Decimals as strings, times as epoch float seconds.

Snapshot. ``snapshot()`` is a JSON-able dict of everything; ``restore()`` validates it
and starts fresh (``offline``, no baseline: the first poll is a ``job_start``) when it is
unusable: unknown state, wrong press, wrong version or a malformed field. An open first
article whose plan revision or characteristics no longer match the plans is emptied
(same attempt number). Restored, the press continues exactly where it was: no setup is
invented, and idle time across the restart counts towards a long stop.

Quality workflow (issue 5; details and the choices made in docs/quality.md)
----------------------------------------------------------------------------

Phases. Every setup trigger and every plan revision change starts a new SPC phase
(``context.phase``); the per-characteristic SPC state (``collector.quality.CharSpc``) is
reset, so run rules and baseline limits are evaluated within a phase. Each setup reason
is also an ``annotation`` event (die change, die repair, press maintenance, material lot
change, job change, long stop; plan change when the revision changes under a running job).

Patrol. In ``released``/``stopped`` a check is due every ``patrol_every_strokes`` strokes
(from the PLC counter) and/or ``patrol_every_min`` minutes since the release or the last
completed check -> ``measurement_due``. ``on_tick(ts)`` (the daemon calls it every
second) and every poll look at the clock; the workflow stays pure. A due check is
complete when every characteristic has completed a subgroup; not complete within
``overdue_grace_min`` -> one ``overdue`` event (the missed-check record, with reason).
Readings in production form subgroups of ``subgroup_size`` per characteristic; each
``measurement`` carries its subgroup id/position, phase and due id.

SPC and reactions. A completed subgroup is judged against frozen limits (plan-fixed, or
computed from the first K subgroups of the phase: ``control_limits`` event when they
freeze); broken rules -> ``alarm`` (cause ``rule``) with the evidence. An out-of-tolerance
value -> ``alarm`` (cause ``out_of_tolerance``). ``capability`` every
``capability_every`` subgroups and on request; Cpk below the minimum (with enough
values) -> ``alarm`` (cause ``low_capability``); Cpk and Ppk at or above the review
threshold -> ``capability_review`` (a suggestion; the plan is never changed). The
reaction plan of the characteristic's class adds ``hold`` (trigger ``reaction_hold``)
and/or ``inspection_100`` (a mode flag in the context, not a state: every piece is to be
measured until a quality ``release`` command).

Commands. ``on_command(ts, name, payload)`` validates (fields, allow-list, state) and
returns a ``CommandResult``; a refused command changes nothing. An accepted one is a
``command`` event (audit: who, when, what, effect) followed by what it caused.

Last piece. ``start_last_piece`` routes the next readings (one per characteristic) to the
last piece -> ``last_piece`` event, kept per die in the snapshot; when the next first
article on that die completes, ``last_piece_comparison`` reports both values.
"""

from __future__ import annotations

from collector.workflow.commands import CommandResult
from collector.workflow.core import PressWorkflow
from collector.workflow.kernel import (
    ANNOTATION_TYPES,
    ANNOTATIONS,
    ANY,
    AWAITING_FIRST_ARTICLE,
    EVENT_KINDS,
    FIRST_ARTICLE,
    HOLD,
    OFFLINE,
    PREVIOUS,
    RELEASED,
    SETUP,
    SETUP_REASONS,
    STOPPED,
    TRANSITIONS,
    TRIGGERS,
    UNASSIGNED_REASONS,
    Transition,
    diagram,
    next_state,
)
from collector.workflow.patrol import MISSED_KEPT
from collector.workflow.snapshot import VERSION as SNAPSHOT_VERSION
from collector.workflow.values import reading

__all__ = [
    "ANNOTATIONS", "ANNOTATION_TYPES", "ANY", "AWAITING_FIRST_ARTICLE", "EVENT_KINDS",
    "FIRST_ARTICLE", "HOLD", "MISSED_KEPT", "OFFLINE", "PREVIOUS", "RELEASED", "SETUP",
    "SETUP_REASONS", "SNAPSHOT_VERSION", "STOPPED", "TRANSITIONS", "TRIGGERS",
    "UNASSIGNED_REASONS", "CommandResult", "PressWorkflow", "Transition", "diagram",
    "next_state", "reading",
]
