"""Keep secrets (the API key) out of everything a command prints, whatever prints it.

`redacted_output(secret)` replaces `sys.stdout` and `sys.stderr` for the duration of a command
with streams that write `***` in place of the secret, so print, the progress bar, warnings,
logging to the console and tracebacks are all covered, and no other code needs to scrub
anything: a server that echoes the Authorization header, a judge whose reply quotes the key,
an exception message holding it. Fragments of the secret (a message cut short in the middle of
it) are replaced too: any run of at least `FRAGMENT` of its characters.

The command entry points in `cli.py` set it up; another command using the same client (e.g. a
data generator) does the same. That covers what is printed, not what is written to files: a
command that writes reply text (`generate`'s rows and cache) masks it through
`OpenAIChatClient.without_key` as each reply arrives.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import traceback
from collections.abc import Iterator

MASK = "***"
FRAGMENT = 8  # shorter runs of a key's characters occur by chance and identify nothing
SHORTEST_SECRET = 4  # a "secret" of 1-3 characters would mask ordinary text


def kept_secrets(*secrets: str | None) -> tuple[str, ...]:
    """The secrets worth masking (set, and long enough to identify), longest first."""
    return tuple(sorted({s for s in secrets if s and len(s) >= SHORTEST_SECRET}, key=len))[::-1]


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret, and every run of >= FRAGMENT of a secret's characters, masked."""
    for secret in secrets:
        if len(secret) < FRAGMENT:
            text = text.replace(secret, MASK)
        else:
            text = _mask_fragments(text, secret)
    return text


@functools.lru_cache(maxsize=8)
def _fragment_pattern(secret: str) -> re.Pattern:
    grams = {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
    return re.compile("|".join(map(re.escape, sorted(grams))))


def _mask_fragments(text: str, secret: str) -> str:
    """Mask each maximal run of the text that is a piece of `secret` at least FRAGMENT long."""
    pattern = _fragment_pattern(secret)
    out, position = [], 0
    while match := pattern.search(text, position):
        end = match.end()
        while end < len(text) and text[match.start() : end + 1] in secret:
            end += 1
        out += [text[position : match.start()], MASK]
        position = end
    return "".join([*out, text[position:]])


class RedactingStream:
    """A text stream that masks `secrets` in everything written to it, then passes it on."""

    def __init__(self, stream, secrets: tuple[str, ...]):
        self._stream = stream
        self._secrets = secrets

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):  # flush, isatty, fileno, encoding...: the real stream's
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output(*secrets: str | None) -> Iterator[None]:
    """Mask `secrets` in stdout and stderr inside the block.

    An exception escaping the block is printed here, masked, and becomes `SystemExit(1)` (what
    Python does with an uncaught exception): printed after the block, its traceback would go to
    the unmasked streams.
    """
    kept = kept_secrets(*secrets)
    if not kept:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(saved[0], kept), RedactingStream(saved[1], kept)
    try:
        yield
    except Exception:  # noqa: BLE001 - any error: printed masked, then exit 1 as Python would
        traceback.print_exc()  # to the masked sys.stderr
        raise SystemExit(1) from None
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved
