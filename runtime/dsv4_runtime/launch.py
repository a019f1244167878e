"""What the runtime starts: the engine's command lines, whichever engine it is."""

from __future__ import annotations

from dataclasses import dataclass, field

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
        prelaunch_purposes: what each prelaunch command does or waits for, in words (e.g.
            "wait up to 600 s for the leader's runtime at 10.0.0.5:8081 ..."), for the log
            and the termination log; empty: the command line stands in. Not compared: two
            launches with the same commands are equal.

    Raises:
        ValueError: `prelaunch_purposes` is given but not one per prelaunch command.
    """

    prelaunch: tuple[tuple[str, ...], ...]
    argv: tuple[str, ...]
    serves_api: bool
    prelaunch_purposes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.prelaunch_purposes and len(self.prelaunch_purposes) != len(self.prelaunch):
            raise ValueError(
                f"prelaunch_purposes has {len(self.prelaunch_purposes)} entries for "
                f"{len(self.prelaunch)} prelaunch commands"
            )

    def prelaunch_purpose(self, index: int) -> str:
        """What prelaunch command `index` does, in words (its command line when not given)."""
        if self.prelaunch_purposes:
            return self.prelaunch_purposes[index]
        return " ".join(self.prelaunch[index])
