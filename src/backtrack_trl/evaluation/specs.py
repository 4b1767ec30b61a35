"""Decoder specs of the evaluation and the study: ``method[:key=value,...]`` (a ``label=`` key renames the row).

Examples: ``greedy``, ``beam:n=16``, ``best_of_n:n=8``, ``self_backtracking:n=32,b=1``, ``released:n=8,b=1``.

Usage:

```python
from backtrack_trl.evaluation.specs import check_decoder_specs, parse_decoder_spec

assert parse_decoder_spec("self_backtracking:n=32,b=1,label=SB") == ("SB", "self_backtracking", {"n": 32, "b": 1})
check_decoder_specs(["greedy", "best_of_n:n=8"])  # a ValueError naming the spec and the option when one is bad
```
"""

from __future__ import annotations


DEFAULT_DECODERS = [
    "greedy",
    "beam:n=16",
    "best_of_n:n=8",
    "best_of_n:n=32",
    "self_backtracking:n=8,b=0",
    "self_backtracking:n=32,b=0",
    "self_backtracking:n=8,b=1",
    "self_backtracking:n=32,b=1",
]
# Decoders whose candidates carry per-sample scores, so other selection rules can be replayed on one run.
RESCORABLE = ("best_of_n", "self_backtracking")


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def uses_vllm(spec: str) -> bool:
    """Whether decoder spec ``spec`` runs on vLLM (``backend=vllm``)."""
    return parse_decoder_spec(spec)[2].get("backend") == "vllm"


def parse_decoder_spec(spec: str) -> tuple[str, str, dict]:
    """``"self_backtracking:n=32,b=1"`` -> ``(label, method, options)``; a clear error for a bad spec."""
    from backtrack_trl.decoding.api import DECODERS

    method, _, rest = spec.partition(":")
    method = method.strip()
    if method not in DECODERS:
        from backtrack_trl.errors import did_you_mean

        hint = did_you_mean(method, DECODERS)
        raise ValueError(f"Decoder spec {spec!r}: unknown method {method!r}; choose one of {sorted(DECODERS)}{hint}.")
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"Decoder spec {spec!r}: {item!r} is not key=value (e.g. self_backtracking:n=32,b=1).")
        options[key.strip()] = _value(value.strip())
    label = str(options.pop("label", spec))
    return label, method, options


def check_decoder_specs(specs: list[str], where: str = "--decoders: ") -> None:
    """Parse every spec and check its options against its decoder (no model needed); one error naming the option
    (``where``) and the spec."""
    from backtrack_trl.decoding.api import check_decoder_options

    for spec in specs:
        try:
            _, method, options = parse_decoder_spec(spec)
        except ValueError as error:
            raise ValueError(f"{where}{error}") from None
        try:
            check_decoder_options(method, options)
        except ValueError as error:
            raise ValueError(f"{where}Decoder spec {spec!r}: {error}") from None


def spec_file_name(label: str) -> str:
    """A file name for a decoder label (``self_backtracking:n=8,b=1`` -> ``self_backtracking_n8_b1``)."""
    return label.replace("/", "_").replace(":", "_").replace(",", "_").replace("=", "")
