"""The control plane under randomized interleavings and injected faults (tests/simulation.py), with shrinking.

Hypothesis drives `World` through random histories: objects written, overwritten and deleted at the source; S3
events delivered late, twice, or retried; workers receiving, copying, counting and dying; stream records handed to
completion (again); sweeps with the clock moved on; retries; uploads aborted from outside; faults on every boto3 call
(refused, answer lost, retried after a lost answer, process killed) and preemptions inside operations. Invariants are
checked as the engine writes DONE/FAILED, after every step, and at quiescence (see tests/simulation.py).

CI runs a fixed list of seeds and a few fresh ones; `make simulate` (S3SYNC_SIM_EXAMPLES, S3SYNC_SIM_STEPS) runs
longer. On failure Hypothesis prints the seed (`@seed(...)`) and the shortest history it found; the assertion
message carries the simulation's own log of the last steps.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from tests.simulation import KEYS, SIZES, STALE_AFTER, InvariantViolation, World

EXAMPLES = int(os.environ.get("S3SYNC_SIM_EXAMPLES", "20"))
STEPS = int(os.environ.get("S3SYNC_SIM_STEPS", "80"))
FIXED_SEEDS = (1, 2, 3)
FRESH_SEEDS = int(os.environ.get("S3SYNC_SIM_FRESH", "1"))

picks = st.integers(0, 7)


STEPS_RUN = [0]  # steps executed by the examples of the current run (rules and settling rounds)


def checked(step: Callable[..., None]) -> Callable[..., None]:
    """A broken invariant (a BaseException inside the engine, so nothing there swallows it) becomes an
    AssertionError here, which Hypothesis shrinks; the world is then left alone (no settling)."""
    @functools.wraps(step)
    def run(self: ControlPlane, *args: Any, **kwargs: Any) -> None:
        STEPS_RUN[0] += step.__name__ != "accounting"
        try:
            step(self, *args, **kwargs)
        except InvariantViolation as exc:
            self.broken = True
            raise AssertionError(str(exc)) from None
    return run

workers = st.integers(0, 2)


class ControlPlane(RuleBasedStateMachine):
    world: World | None = None
    broken = False

    @initialize(world_seed=st.integers(0, 2**32 - 1), versioned=st.booleans(), kms=st.booleans(),
                propagate=st.booleans(), inline=st.booleans())
    def start(self, world_seed: int, versioned: bool, kms: bool, propagate: bool, inline: bool) -> None:
        self.world = World(world_seed, versioned=versioned, kms=kms, propagate=propagate, inline=inline)
        self.world.history.append(f"world seed {world_seed} versioned={versioned} kms={kms} propagate={propagate} "
                                  f"inline={inline} (small objects copied by the splitter)")

    def teardown(self) -> None:
        if self.world is None:
            return
        try:
            if not self.broken:
                checked(ControlPlane.settle)(self)
        finally:
            self.world.close()

    def settle(self) -> None:
        self.world.settle()

    # --- the source ---------------------------------------------------------------------------------------------
    @rule(key=st.sampled_from(KEYS), size=st.sampled_from(SIZES))
    @checked
    def write(self, key: str, size: int) -> None:
        self.world.write_source(key, size)

    @rule(key=st.sampled_from(KEYS))
    @checked
    def delete(self, key: str) -> None:
        self.world.delete_source(key)

    # --- the engine ---------------------------------------------------------------------------------------------
    @rule(pick=picks, keep=st.booleans())
    @checked
    def event(self, pick: int, keep: bool) -> None:
        self.world.step_event(pick, keep)

    @rule(w=workers, n=st.integers(1, 3))
    @checked
    def receive(self, w: int, n: int) -> None:
        self.world.step_receive(w, n)

    @rule(w=workers, pick=picks)
    @checked
    def copy(self, w: int, pick: int) -> None:
        self.world.step_worker(w, pick)

    @rule(w=workers, pick=picks)
    @checked
    def record(self, w: int, pick: int) -> None:
        self.world.step_record(w, pick)

    @rule(w=workers)
    @checked
    def flush(self, w: int) -> None:
        self.world.step_flush(w)

    @rule(w=workers)
    @checked
    def kill(self, w: int) -> None:
        self.world.kill_worker(w)

    @rule(seconds=st.sampled_from((1, 60, STALE_AFTER + 1)), expire_held=st.booleans())
    @checked
    def time_passes(self, seconds: int, expire_held: bool) -> None:
        self.world.pass_time(seconds, expire_held)

    @rule(pick=picks, keep=st.booleans())
    @checked
    def stream(self, pick: int, keep: bool) -> None:
        self.world.step_stream(pick, keep)

    @rule(advance=st.sampled_from((0, STALE_AFTER + 1)))
    @checked
    def sweep(self, advance: int) -> None:
        self.world.step_sweep(advance)

    @rule(pick=picks)
    @checked
    def retry(self, pick: int) -> None:
        self.world.step_retry(pick)

    @rule(pick=picks, kind=st.integers(0, 3))
    @checked
    def forge(self, pick: int, kind: int) -> None:
        self.world.forge_message(pick, kind)

    @rule(pick=picks)
    @checked
    def abort_from_outside(self, pick: int) -> None:
        self.world.abort_upload(pick)

    @rule(rate=st.sampled_from((0.0, 0.05, 0.2)), preempt=st.sampled_from((0.0, 0.1, 0.3)),
          fault_seed=st.integers(0, 2**32 - 1))
    @checked
    def faults(self, rate: float, preempt: float, fault_seed: int) -> None:
        self.world.fault_rate, self.world.preempt_rate = rate, preempt
        self.world.rng.seed(fault_seed)
        self.world.history.append(f"  faults: rate {rate}, preemption {preempt}, seed {fault_seed}")

    @invariant()
    @checked
    def accounting(self) -> None:
        if self.world is not None:
            self.world.check_accounting()
            self.world.check_destination()


def _run(run_seed: int) -> None:
    machine = seed(run_seed)(ControlPlane)
    STEPS_RUN[0] = 0
    run_state_machine_as_test(machine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None, print_blob=True,
        suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
    ))
    print(f"simulation seed {run_seed}: {EXAMPLES} histories, {STEPS_RUN[0]} steps, no invariant broken")
    assert STEPS_RUN[0] >= EXAMPLES * 5  # the histories did run (a step count far below means a broken harness)


@pytest.mark.parametrize("run_seed", FIXED_SEEDS)
@pytest.mark.system
def test_fixed_seeds(run_seed: int) -> None:
    _run(run_seed)


@pytest.mark.parametrize("n", range(FRESH_SEEDS))
@pytest.mark.system
def test_fresh_seed(n: int) -> None:
    run_seed = random.SystemRandom().randrange(2**32)
    print(f"simulation seed {run_seed} (rerun: tests/test_simulation.py::_run({run_seed}))")
    _run(run_seed)
