"""The error raised when a DeepSeekV4Deployment fails the pydantic parse."""

from dataclasses import dataclass

from pydantic import ValidationError

__all__ = ["FieldError", "InvalidSpecError"]


@dataclass(frozen=True)
class FieldError:
    """One problem in a resource: where (`spec.gpu.gpusPerNode`) and what (names the limit)."""

    path: str
    """Dotted field path with camelCase names and `[i]` list indices, from the resource root."""
    message: str
    """What is wrong, naming the limit, e.g. `Input should be less than or equal to 16`."""

    def describe(self) -> str:
        """Return `path: message`."""
        return f"{self.path}: {self.message}"


class InvalidSpecError(ValueError):
    """A resource failed validation; the message lists every failing field path and its limit.

    The operator turns it into `Ready=False`, reason `InvalidSpec`, and an Event with `str(err)`.

    Attributes:
        errors: the individual problems, in pydantic's order.
    """

    reason = "InvalidSpec"
    """Condition reason the operator reports for this error."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(error.describe() for error in self.errors))

    @classmethod
    def from_validation_error(cls, error: ValidationError, prefix: str = "") -> "InvalidSpecError":
        """Build from a pydantic `ValidationError`, prefixing each path with `prefix` (`spec`).

        Args:
            error: the pydantic error, validated by alias so paths carry the camelCase names.
            prefix: path of the validated object inside the resource ("" for the root).

        Returns:
            The error, one `FieldError` per pydantic error.
        """
        items = []
        for detail in error.errors(include_url=False):
            path = prefix
            for part in detail["loc"]:
                if isinstance(part, int):
                    path += f"[{part}]"
                elif part in {"function-after", "function-before"} or "[" in part:
                    continue  # pydantic's internal validator steps, not field names
                else:
                    path = f"{path}.{part}" if path else part
            message = detail["msg"].removeprefix("Value error, ")
            if detail["type"] == "extra_forbidden":
                message = "unknown field (not in the DeepSeekV4Deployment schema)"
            items.append(FieldError(path=path or "<root>", message=message))
        return cls(items)
