"""Sample rows as users store them: formats, stable content keys, uncertainty values.

Shared by training (the dataset strategies) and by the elicitation utility, so that both
agree on what a sample *is*: the sidecar annotations written by `axolotl-ual elicit` are
joined to training rows by `sample_key`, which only looks at the content that is trained on.
No axolotl or torch imports here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import DataError

CHAT = "chat"
ALPACA = "alpaca"
FORMATS = (CHAT, ALPACA)
ALPACA_FIELDS = ("instruction", "input", "output")
DEFAULT_MESSAGES_FIELD = "messages"

# Column names of a sidecar annotation file: one row per sample.
SIDECAR_KEY = "sample_key"
SIDECAR_UNCERTAINTY = "uncertainty"


class InvalidUncertainty(DataError):
    """An uncertainty value that is not a number in [0, 1]."""


class InvalidLabel(DataError):
    """A preference label that is not 0 / 1 (binary) or a number in [0, 1] (continuous)."""


def content_fields(fmt: str, field_messages: str = DEFAULT_MESSAGES_FIELD) -> tuple[str, ...]:
    """The columns that define a sample's content for `fmt` (what `sample_key` hashes)."""
    if fmt == CHAT:
        return (field_messages,)
    if fmt == ALPACA:
        return ALPACA_FIELDS
    raise ValueError(f"unknown row format {fmt!r}; expected one of {FORMATS}")


def detect_format(row: Mapping[str, Any], field_messages: str = DEFAULT_MESSAGES_FIELD) -> str:
    """`chat` if the row has a list of messages, `alpaca` if it has instruction/output."""
    if isinstance(row.get(field_messages), list):
        return CHAT
    if "instruction" in row and "output" in row:
        return ALPACA
    raise ValueError(
        f"cannot tell the row format: expected a list under {field_messages!r} (chat) or "
        f"'instruction' and 'output' fields (alpaca); the row has fields {sorted(row)}"
    )


_EXACT_FLOAT_INTS = 2**53  # integers a float64 holds exactly


def _canonical(value: Any) -> Any:
    """The value as loader-independent JSON data.

    Arrow (`datasets`, Parquet) re-types what a JSON reader keeps apart: it fills keys missing
    from some rows of a column with None, and reads `1` as `1.0` when the column also holds
    `1.5`. So `None` values are dropped and integral floats become ints before hashing; key
    order never matters (the JSON is dumped with sorted keys).
    """
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Sequence):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOAT_INTS:
        return int(value)
    return value


def sample_key(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    """A stable hex digest of the row's content fields.

    Canonical JSON (see `_canonical`), so the key is the same whether the row was read with
    `json`, pandas or `datasets` (Arrow), and whatever other columns the file has. Missing
    fields hash as absent.
    """
    content = {f: _canonical(row[f]) for f in fields if row.get(f) is not None}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_uncertainty(value: Any) -> float | None:
    """Return `value` as a float in [0, 1], `None` when missing, or raise `InvalidUncertainty`.

    A number, or a string that holds one ("0.5", as CSV files and some exporters write
    numbers): Arrow turns such a string into a number when the rest of its column is numeric,
    so accepting it everywhere gives one answer whatever the loader. Any other text, booleans,
    NaN and values outside [0, 1] are errors.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidUncertainty(f"{value!r} is not a number (type bool)")
    return _unit_number(value, InvalidUncertainty, "uncertainty")


def _unit_number(value: Any, error: type[DataError], what: str) -> float:
    """`value` (a number, or text holding one) as a float in [0, 1], or `error`."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise error(f"{value!r} is not a number (type str)") from None
    elif not isinstance(value, (int, float)):
        raise error(f"{value!r} is not a number (type {type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise error(f"NaN is not a valid {what}")
    if not 0.0 <= value <= 1.0:
        # %g: some JSON readers return 1.7 as 1.7000000000000002
        raise error(f"{value:.10g} is outside [0, 1]")
    return value


def parse_preference(value: Any, *, binary: bool) -> float:
    """A preference label as a float: 1 / 0 (or true / false) when `binary`, else a number in
    [0, 1] (numbers written as text are read, as for uncertainties). Raises `InvalidLabel`."""
    if value is None:
        raise InvalidLabel("missing (null)")
    if isinstance(value, bool):
        return float(value)
    value = _unit_number(value, InvalidLabel, "label")
    if binary and value not in (0.0, 1.0):
        raise InvalidLabel(
            f"{value:.10g} is neither 0 nor 1 (for scores in [0, 1] set "
            "ual_preference_labels: continuous)"
        )
    return value
