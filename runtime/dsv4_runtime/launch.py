"""What the runtime starts: the engine's command lines, whichever engine it is."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Launch"]


@dataclass(frozen=True)
class Launch:
    """The processes one pod runs for its engine.

    Attributes:
        prelaunch: commands run to completion, in order, before the engine (e.g. `ray start
            --head` on a PP leader); a non-zero exit stops the launch.
        argv: the engine process the runtime supervises (SIGTERM on drain, SIGKILL of its
            process group after the grace period).
        serves_api: True when `argv` serves the OpenAI API, `/health` and `/metrics` on the API
            port (vLLM leader, reference engine); False for headless vLLM workers and Ray
            workers, which have no HTTP endpoint.
    """

    prelaunch: tuple[tuple[str, ...], ...]
    argv: tuple[str, ...]
    serves_api: bool
