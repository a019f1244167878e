"""Write `operator/dsv4_operator/api/v1alpha1/vllm_options.py` from vLLM's parser dump.

Usage: `.venv/bin/python hack/gen_vllm_options.py [DUMP]` (default: the fixture
`$DSV4_FIXTURES/vllm/vllm-<VLLM_VERSION>-serve-flags.json`, `../shared/fixtures` when unset),
then `ruff format`. `tests/operator/api/test_vllm_cli.py` checks the file against the dump.
"""

import json
import os
import sys
from pathlib import Path

from dsv4_operator.api.v1alpha1.vllm_cli import VLLM_VERSION, options_from_parser_dump

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "operator" / "dsv4_operator" / "api" / "v1alpha1" / "vllm_options.py"


def main() -> None:
    """Regenerate the table (argument: the dump's path)."""
    fixtures = Path(os.environ.get("DSV4_FIXTURES", ROOT.parent / "shared" / "fixtures"))
    default = fixtures / "vllm" / f"vllm-{VLLM_VERSION}-serve-flags.json"
    dump = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else default).read_text())
    if dump["vllm_version"] != VLLM_VERSION:
        sys.exit(f"the dump is vLLM {dump['vllm_version']}, VLLM_VERSION is {VLLM_VERSION}")
    rows = [f"    {name!r}: {option!r}," for name, option in options_from_parser_dump(dump).items()]
    TARGET.write_text(
        f'"""`vllm serve` long options of vLLM {VLLM_VERSION}: generated, do not edit.\n\n'
        "Written by `hack/gen_vllm_options.py` from vLLM's own parser (`make_arg_parser`,\n"
        f"shared/fixtures/vllm/vllm-{VLLM_VERSION}-serve-flags.json); `vllm_cli` reads it.\n"
        '"""\n\n'
        "from typing import Final\n\n"
        "from dsv4_operator.api.v1alpha1.vllm_cli import ServeOption\n\n"
        '__all__ = ["SERVE_OPTIONS"]\n\n'
        "SERVE_OPTIONS: Final[dict[str, ServeOption]] = {\n" + "\n".join(rows) + "\n}\n"
    )


if __name__ == "__main__":
    main()
