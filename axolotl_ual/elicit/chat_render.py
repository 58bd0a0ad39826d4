"""A sample as the token ids a local model reads, and which of them are the response.

With a chat template, a response is everything an assistant turn adds to the rendered
conversation (its content and the template's end-of-turn marker, what axolotl trains); without
one, the sample is rendered as `### Role:` blocks and a response is the assistant's content.
Used by the `entropy` method (`methods.Entropy`) and by the local backends' judge prompts.
"""

from __future__ import annotations

from .samples import ASSISTANT


def render_chat(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The chat-templated text and the character spans of its assistant turns."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        span = None
        if index:
            try:
                before = tokenizer.apply_chat_template(
                    messages[:index], tokenize=False, add_generation_prompt=True
                )
                through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
            except Exception:  # noqa: BLE001 - some templates reject partial conversations
                before = through = None
            if (
                before is not None
                and through is not None
                and through.startswith(before)
                and full.startswith(through)
                and len(before) >= cursor
            ):
                # what training learns: the content and the turn's end token, not the
                # whitespace some templates write after it (e.g. chatml's "\n" after
                # <|im_end|>, which axolotl leaves untrained)
                end = len(through.rstrip())
                span = (len(before), max(end, len(before)))
        if span is None:  # a template that rewrites earlier turns: find the content itself
            start = full.find(message["content"], cursor)
            if start < 0 or not message["content"]:
                continue
            span = (start, start + len(message["content"]))
        spans.append(span)
        cursor = span[1]
    return full, spans


def render_plain(messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """`### Role:` blocks for models without a chat template, and the assistant content spans."""
    text, spans = "", []
    for message in messages:
        text += f"### {message['role'].capitalize()}:\n"
        if message["role"] == ASSISTANT:
            spans.append((len(text), len(text) + len(message["content"])))
        text += message["content"] + "\n\n"
    return text, spans


def encode_response(
    tokenizer, messages: list[dict[str, str]], max_length: int
) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and, per token, whether it belongs to a response.

    Conversations longer than `max_length` tokens are cut at the end.
    """
    if getattr(tokenizer, "chat_template", None):
        text, spans = render_chat(tokenizer, messages)
        add_special_tokens = False  # the template writes its own BOS, if the model has one
    else:
        text, spans = render_plain(messages)
        add_special_tokens = True
    try:
        encoded = tokenizer(
            text,
            add_special_tokens=add_special_tokens,
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=True,
        )
    except NotImplementedError:  # slow tokenizers have no offsets
        return _encode_by_prefixes(tokenizer, text, spans, add_special_tokens, max_length)
    mask = [
        end > start and any(lo <= start < hi for lo, hi in spans)
        for start, end in encoded["offset_mapping"]
    ]
    return list(encoded["input_ids"]), mask


def _encode_by_prefixes(tokenizer, text, spans, add_special_tokens, max_length):
    """The response mask without offsets: token counts of the text up to each span's ends."""

    def count(prefix: str) -> int:
        return len(tokenizer(prefix, add_special_tokens=add_special_tokens)["input_ids"])

    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"][:max_length]
    mask = [False] * len(ids)
    for lo, hi in spans:
        for position in range(count(text[:lo]), min(count(text[:hi]), len(ids))):
            mask[position] = True
    return list(ids), mask
