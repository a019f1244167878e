"""An offline load simulation that drives `decide` the way the operator does (tests, benchmark).

Model (fluid, one step per scrape interval):

- The load script gives offered generation tokens/s at each time. Requests generate
  `tokens_per_request_per_second` each, so a group serving `x` tokens/s runs `x / r` requests.
- A ready, non-draining group serves up to `capacity_factor x target` tokens/s; the offered load is
  split evenly across them; what exceeds their capacity waits (`waiting` grows with the backlog,
  which clients abandon after `request_timeout_seconds`).
- KV usage of a group = running requests / `max_concurrency`.
- A new group is `starting` for `startup_seconds` (image pull, weight load, warm-up), then ready.
- A drained group receives nothing new; its running requests finish within `drain_seconds`.
- Scaling down removes the highest-index groups (LeaderWorkerSet order).

The simulation records every decision and, per step, replicas, ready groups, load and capacity, so
tests can assert on bounds, reaction time, flapping and in-flight safety.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dsv4_operator.autoscaling.policy import (
    AutoscalerConfig,
    AutoscalerState,
    Decision,
    GroupSample,
    Observation,
    decide,
)

__all__ = ["SimGroup", "SimStep", "Simulation", "run_simulation"]


@dataclass
class SimGroup:
    """Simulated state of one replica group.

    Attributes:
        index: group index.
        ready_at: time the group becomes ready, s.
        draining_since: time the drain began, or None.
        running: requests running.
        backlog_tokens: tokens waiting to be generated.
    """

    index: int
    ready_at: float
    draining_since: float | None = None
    running: int = 0
    backlog_tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class SimStep:
    """One simulated scrape.

    Attributes:
        time: seconds.
        replicas: replicas after the decision.
        ready: ready, serving groups before the decision.
        starting: starting groups before the decision.
        offered: offered load, tokens/s.
        capacity: target capacity of the ready groups, tokens/s.
        removed_in_flight: requests running on groups removed at this step (must be 0).
    """

    time: float
    replicas: int
    ready: int
    starting: int
    offered: float
    capacity: float
    removed_in_flight: int


@dataclass
class Simulation:
    """Result of a run: steps and decisions (non-hold)."""

    steps: list[SimStep] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Rates:
    per_request: float
    max_concurrency: int
    timeout: float


def _sample(
    g: SimGroup, t: float, share: float, cap: float, dt: float, drain: float, rates: _Rates
) -> GroupSample:
    """Advance one group by one interval and report it."""
    ready = g.ready_at <= t
    if g.draining_since is not None:
        if t - g.draining_since >= drain:
            g.running = 0
        g.backlog_tokens = 0.0
        return GroupSample(g.index, ready=ready, draining=True, running=g.running)
    if not ready:
        return GroupSample(g.index, ready=False, starting=True)
    demand = share + g.backlog_tokens / dt
    served = min(demand, cap)
    # Clients give up after `request_timeout_seconds`: the queue holds at most that much.
    excess = max(0.0, share - cap)
    g.backlog_tokens = min(max(0.0, (demand - served) * dt), excess * rates.timeout)
    g.running = min(round(served / rates.per_request), rates.max_concurrency)
    waiting = round(g.backlog_tokens / (rates.per_request * dt))
    return GroupSample(
        g.index,
        ready=True,
        generation_tps=served,
        kv_usage=min(1.0, g.running / rates.max_concurrency),
        running=g.running,
        waiting=waiting,
    )


def run_simulation(
    cfg: AutoscalerConfig,
    load: Callable[[float], float],
    *,
    duration_seconds: float,
    scrape_seconds: float = 15.0,
    initial_replicas: int = 1,
    startup_seconds: float = 1200.0,
    drain_seconds: float = 30.0,
    capacity_factor: float = 1.25,
    tokens_per_request_per_second: float = 40.0,
    max_concurrency: int = 64,
    request_timeout_seconds: float = 60.0,
) -> Simulation:
    """Drive the autoscaler with an offered-load script and a fluid model of the groups.

    Args:
        cfg: autoscaler settings.
        load: offered generation tokens/s as a function of time (s).
        duration_seconds: simulated time, s.
        scrape_seconds: interval between scrapes (and decisions), s.
        initial_replicas: groups ready at time 0.
        startup_seconds: time a new group takes to become ready, s.
        drain_seconds: time for a drained group's running requests to finish, s.
        capacity_factor: a group's maximum throughput as a multiple of the target.
        tokens_per_request_per_second: generation speed of one request.
        max_concurrency: requests a group holds at 100 % KV usage.
        request_timeout_seconds: clients abandon requests queued longer than this, s.

    Returns:
        The recorded steps and decisions.
    """
    groups = [SimGroup(i, ready_at=0.0) for i in range(initial_replicas)]
    state = AutoscalerState()
    sim = Simulation()
    t = 0.0
    cap = cfg.target_tokens_per_second * capacity_factor
    rates = _Rates(tokens_per_request_per_second, max_concurrency, request_timeout_seconds)
    while t <= duration_seconds:
        offered = load(t)
        serving = [g for g in groups if g.ready_at <= t and g.draining_since is None]
        share = offered / len(serving) if serving else 0.0
        samples = [_sample(g, t, share, cap, scrape_seconds, drain_seconds, rates) for g in groups]
        pending = round(offered / tokens_per_request_per_second) if not serving else 0
        obs = Observation(t, len(groups), tuple(samples), pending_outside=pending)
        decision, state = decide(cfg, state, obs)
        removed_in_flight = 0
        if decision.action != "hold":
            sim.decisions.append(decision)
        if decision.action == "drain":
            for g in groups:
                if g.index in decision.groups:
                    g.draining_since = t
        elif decision.action == "undrain":
            for g in groups:
                g.draining_since = None
        elif decision.action == "scale":
            if decision.replicas_to > len(groups):
                groups += [
                    SimGroup(i, ready_at=t + startup_seconds)
                    for i in range(len(groups), decision.replicas_to)
                ]
            else:
                removed = groups[decision.replicas_to :]
                removed_in_flight = sum(g.running for g in removed if g.ready_at <= t)
                groups = groups[: decision.replicas_to]
        sim.steps.append(
            SimStep(
                time=t,
                replicas=len(groups),
                ready=len(serving),
                starting=sum(1 for g in groups if g.ready_at > t),
                offered=offered,
                capacity=len(serving) * cfg.target_tokens_per_second,
                removed_in_flight=removed_in_flight,
            )
        )
        t += scrape_seconds
    return sim
