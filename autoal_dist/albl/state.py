"""ALBL's bandit state in the run directory (`albl_state.json`): read, written, checked.

One entry per round, written atomically before the round's batch is journaled. A resumed
round drops entries from its own round on and recomputes them from the same seed and the
same (deterministically trained) classifier, so resume is exact.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autoal_dist.albl import bandit
from autoal_dist.errors import first_line

if TYPE_CHECKING:
    from autoal_dist.run import Run

STATE_FILE = "albl_state.json"
UNIFORM = "uniform"  # the uniform sampler arm (not the hashed `random` strategy)
DELTA = 0.1  # EXP4.P's confidence parameter (libact's default)
KEYS = ("experts", "horizon", "delta", "pmin", "rounds")
ENTRY_KEYS = ("round", "reward", "log_weights", "p", "ids", "q", "ratios")


def new_state(candidates: list[str], horizon: int) -> dict:
    """Bandit parameters fixed at the campaign's start: T = rounds * budget queries.

    Raising --rounds on resume keeps this T (and p_min): the bandit is not restarted.
    """
    experts = [*candidates, UNIFORM]
    return {"experts": experts, "horizon": horizon, "delta": DELTA,
            "pmin": bandit.default_pmin(len(experts), horizon), "rounds": []}


def load_state(run: Run, candidates: list[str], horizon: int, round_: int) -> dict:
    """The state as it was before `round_` queried (later entries of a crashed run dropped)."""
    if not run.exists(STATE_FILE):
        return new_state(candidates, horizon)
    state = run.read_json(STATE_FILE)
    if state["experts"] != [*candidates, UNIFORM]:
        raise ValueError(f"{run.where(STATE_FILE)}: experts {state['experts']} differ from the "
                         f"campaign's candidates {candidates} + {UNIFORM}")
    state["rounds"] = [e for e in state["rounds"] if e["round"] < round_]
    return state


def save_state(run: Run, state: dict) -> None:
    run.write_json(STATE_FILE, state)


def check_state(run: Run, name: str) -> None:
    """ValueError unless `name` is a JSON object of the shape `load_state` reads
    (`policies.POLICY_FILES`: checked before a resumed round reads it)."""
    try:
        state = run.read_json(name)
    except (OSError, ValueError) as e:
        raise ValueError(f"not readable JSON "
                         f"({first_line(e)})") from None
    missing = [k for k in KEYS if k not in state] if isinstance(state, dict) else list(KEYS)
    if missing or not isinstance(state["experts"], list) or not isinstance(state["rounds"],
                                                                           list):
        raise ValueError(f"not ALBL's bandit state (expected an object with "
                         f"{', '.join(KEYS)}); it was damaged or replaced")
    for k, entry in enumerate(state["rounds"]):
        if not isinstance(entry, dict) or any(key not in entry for key in ENTRY_KEYS) \
                or not isinstance(entry["round"], int):
            raise ValueError(f"entry {k} of rounds is not a bandit round (expected "
                             f"{', '.join(ENTRY_KEYS)})")


FILES = {STATE_FILE: check_state}
