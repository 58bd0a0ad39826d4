"""Dataset rows -> the samples the judge sees, each with its stable content key.

A `Sample` is the conversation to judge (alpaca rows become a user turn and an assistant turn)
plus `rows.sample_key` of the row's content fields: the key the cache, the sidecar file and the
training side all agree on. Rows are validated here, so a malformed row stops the command
before any request is sent, with an error naming the row, the field and the value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import rows as rowlib
from ..errors import UsageError
from .io import DataError

# ShareGPT-style messages ({"from": "human", "value": ...}) are read as role/content.
SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "model": "assistant",
}
ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sample:
    key: str
    messages: tuple[Message, ...]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style content parts
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
            else:
                parts.append(
                    f"[{part.get('type', 'part') if isinstance(part, Mapping) else 'part'}]"
                )
        return "\n".join(parts)
    raise DataError(
        f"{where}: 'content' must be a string, got {type(content).__name__}: {_short(content)}"
    )


def _chat_messages(
    row: Mapping[str, Any], field: str, index: int
) -> tuple[list, tuple[Message, ...]]:
    """(the messages as stored, decoded from JSON text if need be; the normalized messages)."""
    raw = row.get(field)
    if isinstance(raw, str) and raw.lstrip().startswith("["):  # CSV stores lists as JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            pass
    if not isinstance(raw, list):
        raise DataError(
            f"row {index}: field {field!r} must be a list of messages, got "
            f"{type(raw).__name__}: {_short(raw)}"
        )
    messages = []
    for turn, message in enumerate(raw):
        where = f"row {index}, {field}[{turn}]"
        if not isinstance(message, Mapping):
            raise DataError(
                f"{where}: a message must be an object with 'role' and 'content', "
                f"got {type(message).__name__}: {_short(message)}"
            )
        role = message.get("role")
        content = message.get("content")
        if role is None and "from" in message:
            role = SHAREGPT_ROLES.get(message["from"], message["from"])
            content = message.get("value")
        if not isinstance(role, str) or not role:
            raise DataError(f"{where}: 'role' must be a non-empty string, got {_short(role)}")
        messages.append(Message(role, _content_text(content, where)))
    if not messages:
        raise DataError(f"row {index}: field {field!r} is an empty list of messages")
    return raw, tuple(messages)


def _alpaca_messages(row: Mapping[str, Any], index: int) -> tuple[Message, ...]:
    values = {}
    for name in rowlib.ALPACA_FIELDS:
        value = row.get(name)
        required = name != "input"
        if value is None and not required:
            value = ""
        if not isinstance(value, str) or (required and not value.strip()):
            kind = "a non-empty string" if required else "a string"
            raise DataError(
                f"row {index}: field {name!r} must be {kind}, got "
                f"{type(value).__name__}: {_short(value)}"
            )
        values[name] = value
    prompt = values["instruction"]
    if values["input"].strip():
        prompt = f"{prompt}\n\n{values['input']}"
    return (Message("user", prompt), Message(ASSISTANT, values["output"]))


def resolve_format(rows: Sequence[Mapping[str, Any]], fmt: str | None, field_messages: str) -> str:
    """`fmt` if given, else the format of the first row."""
    if fmt:
        if fmt not in rowlib.FORMATS:
            raise UsageError(f"unknown --format {fmt!r}; expected one of {rowlib.FORMATS}")
        return fmt
    if not rows:
        raise DataError("the input has no rows")
    try:
        return rowlib.detect_format(rows[0], field_messages)
    except ValueError as exc:
        raise DataError(f"row 0: {exc}; pass --format / --field-messages") from None


def prepare_samples(
    rows: Sequence[Mapping[str, Any]], fmt: str, field_messages: str = rowlib.DEFAULT_MESSAGES_FIELD
) -> list[Sample]:
    """One `Sample` per row (same order); raises `DataError` on the first malformed row."""
    fields = rowlib.content_fields(fmt, field_messages)
    samples = []
    for index, row in enumerate(rows):
        if fmt == rowlib.CHAT:
            stored, messages = _chat_messages(row, field_messages, index)
            if stored is not row.get(field_messages):
                row = {**row, field_messages: stored}  # hash the messages, not their JSON text
        else:
            messages = _alpaca_messages(row, index)
        samples.append(Sample(rowlib.sample_key(row, fields), messages))
    return samples


def keys_digest(samples: Sequence[Sample]) -> str:
    """A digest of the ordered sample keys: identifies a dataset (or a shard of one)."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(sample.key.encode("ascii"))
    return digest.hexdigest()


def sidecar_rows(
    samples: Sequence[Sample], uncertainties: Sequence[float | None]
) -> list[dict[str, Any]]:
    """One `{sample_key, uncertainty}` row per scored sample (first occurrence; nulls left out)."""
    seen: set[str] = set()
    out = []
    for sample, value in zip(samples, uncertainties, strict=True):
        if value is None or sample.key in seen:
            continue
        seen.add(sample.key)
        out.append({rowlib.SIDECAR_KEY: sample.key, rowlib.SIDECAR_UNCERTAINTY: value})
    return out
