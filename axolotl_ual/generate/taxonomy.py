"""An InstructLab taxonomy: a folder tree whose leaves are `qna.yaml` files, read and validated.

The rules are those of InstructLab's schema (github.com/instructlab/schema), version 3:

- **Skills** (`compositional_skills/...`, `foundational_skills/...`): `version: 3`,
  `created_by`, `task_description`, `seed_examples`: at least 5 unique items, each with a
  `question` and an `answer` and optionally a `context` (a *grounded* skill: the question is
  asked about the context). Files without `version` are version 1, as the upstream taxonomy's
  foundational skills are: at least 1 seed example. Version 2 is read like version 3.
- **Knowledge** (`knowledge/...`): `version: 3`, `created_by`, `domain`, `seed_examples` (at
  least 5 unique, each a `context` from the document and `questions_and_answers`, at least 3
  unique `{question, answer}`), `document` and `document_outline`.

Where the documents are: InstructLab's `document: {repo, commit, patterns}` names a git
repository, but this command never goes on the network. The documents are found, in this
order, in `document.local_path` (a folder, relative to the leaf's folder), in `document.repo`
when it is a local folder (relative to the leaf, absolute, or `file://`), or under `--documents
DIR` (`DIR/<repository name>` if that folder exists, else `DIR`); a git URL without either
is refused with a message saying how to clone it. `patterns` are globs in that folder. Only text
documents are read (Markdown, plain text, reStructuredText); convert PDFs to Markdown first.

Every problem of every leaf is reported at once, each naming the file, the field and the
problem, before anything is sent.
"""

from __future__ import annotations

import difflib
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError, UsageError

LEAF_FILE = "qna.yaml"
KNOWLEDGE, FOUNDATIONAL, COMPOSITIONAL = "knowledge", "foundational_skill", "compositional_skill"
BRANCHES = (KNOWLEDGE, FOUNDATIONAL, COMPOSITIONAL)  # LAB's training order
BRANCH_OF_FOLDER = {
    "knowledge": KNOWLEDGE,
    "foundational_skills": FOUNDATIONAL,
    "compositional_skills": COMPOSITIONAL,
}
FREEFORM, GROUNDED = "freeform", "grounded"  # the two kinds of skill leaf
SKILL_KEYS = ("version", "created_by", "task_description", "seed_examples")
KNOWLEDGE_KEYS = (
    "version",
    "created_by",
    "domain",
    "seed_examples",
    "document",
    "document_outline",
)
DOCUMENT_KEYS = ("repo", "commit", "patterns", "local_path")
SEED_KEYS = ("question", "answer", "context")
MIN_SEEDS = {1: 1, 2: 5, 3: 5}
MIN_KNOWLEDGE_QA = 3
TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst")
MAX_LISTED = 20
SHORT_TAIL = 0.25  # a last chunk shorter than this fraction of the size joins the previous one


@dataclass(frozen=True)
class Seed:
    """A skills seed example: a question, its answer, and for grounded skills its context."""

    question: str
    answer: str
    context: str | None = None


@dataclass(frozen=True)
class KnowledgeSeed:
    """A knowledge seed example: a context from the document and questions answered from it."""

    context: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Document:
    name: str  # relative to the documents folder, for the rows' `document` column
    text: str


@dataclass
class Leaf:
    path: str  # the leaf's folder relative to the taxonomy root, e.g. "knowledge/science/tides"
    file: Path
    branch: str
    version: int
    created_by: str
    task_description: str = ""
    seeds: tuple[Seed, ...] = ()
    domain: str = ""
    document_outline: str = ""
    knowledge_seeds: tuple[KnowledgeSeed, ...] = ()
    documents: tuple[Document, ...] = field(default=())

    @property
    def kind(self) -> str:
        """`knowledge`, `grounded` (some seed has a context) or `freeform`."""
        if self.branch == KNOWLEDGE:
            return KNOWLEDGE
        return GROUNDED if any(seed.context for seed in self.seeds) else FREEFORM


class _Problems:
    """The problems found in one file, each `<file>: <field>: <problem>`."""

    def __init__(self, shown: str):
        self.shown = shown
        self.items: list[str] = []

    def add(self, where: str, problem: str) -> None:
        self.items.append(
            f"{self.shown}: {where}: {problem}" if where else f"{self.shown}: {problem}"
        )


# --------------------------------------------------------------------------- reading


def find_leaves(root: Path, include: Sequence[str] = ()) -> list[Path]:
    """The `qna.yaml` files under `root`, sorted; with `include`, those whose leaf path (the
    folder, relative to root) matches one of the globs."""
    if not root.exists():
        raise UsageError(f"taxonomy {root}: no such folder")
    if not root.is_dir():
        raise UsageError(f"taxonomy {root}: is not a folder (give the taxonomy's root folder)")
    files = sorted(
        path
        for path in root.rglob(LEAF_FILE)
        if not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if include:
        files = [f for f in files if any(_matches(leaf_path(root, f), g) for g in include)]
        if not files:
            raise UsageError(
                f"taxonomy {root}: no leaf matches --leaf {' / '.join(include)} (a leaf is the "
                "folder of a qna.yaml relative to the taxonomy, e.g. compositional_skills/writing/haiku)"
            )
    if not files:
        raise DataError(f"taxonomy {root}: no {LEAF_FILE} file in it or below it")
    return files


def _matches(path: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    return Path(path).match(pattern) or path == pattern or path.startswith(pattern + "/")


def leaf_path(root: Path, file: Path) -> str:
    return file.parent.relative_to(root).as_posix()


def read_taxonomy(
    root: str | Path,
    *,
    include: Sequence[str] = (),
    documents: str | Path | None = None,
) -> list[Leaf]:
    """Every leaf under `root` (or those matching `include`), validated, knowledge documents
    read, in LAB's order (knowledge, foundational skills, compositional skills; by path within
    each); raises one `DataError` listing every problem of every leaf."""
    root = Path(root)
    documents_dir = Path(documents) if documents is not None else None
    if documents_dir is not None and not documents_dir.is_dir():
        raise UsageError(f"--documents {documents}: no such folder")
    leaves, problems = [], []
    for file in find_leaves(root, include):
        found = _Problems(str(file))
        leaf = _read_leaf(root, file, found, documents_dir)
        problems.extend(found.items)
        if leaf is not None and not found.items:
            leaves.append(leaf)
    if problems:
        shown = problems[:MAX_LISTED]
        more = (
            f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        )
        raise DataError(
            f"the taxonomy {root} has {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more
        )
    return sorted(leaves, key=lambda leaf: (BRANCHES.index(leaf.branch), leaf.path))


def _read_leaf(root: Path, file: Path, problems: _Problems, documents: Path | None) -> Leaf | None:
    relative = file.relative_to(root)
    branch = BRANCH_OF_FOLDER.get(relative.parts[0]) if len(relative.parts) > 1 else None
    if branch is None:
        problems.add(
            "",
            "a leaf must be under knowledge/, foundational_skills/ or compositional_skills/ of "
            "the taxonomy (is the taxonomy's root folder the one given?)",
        )
        return None
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problems.add(where, f"not valid YAML ({getattr(exc, 'problem', None) or exc})")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.add("", f"cannot be read ({exc})")
        return None
    if not isinstance(data, dict):
        problems.add("", f"must be a mapping of fields, not {type(data).__name__}")
        return None
    version = _version(data, branch, problems)
    if version is None:
        return None
    allowed = KNOWLEDGE_KEYS if branch == KNOWLEDGE else SKILL_KEYS
    _unknown_keys(data, allowed, "", problems)
    leaf = Leaf(
        path=leaf_path(root, file),
        file=file,
        branch=branch,
        version=version,
        created_by=_text(data, "created_by", problems) or "",
    )
    if branch == KNOWLEDGE:
        leaf.domain = _text(data, "domain", problems) or ""
        leaf.document_outline = _text(data, "document_outline", problems) or ""
        leaf.knowledge_seeds = _knowledge_seeds(data, version, problems)
        leaf.documents = _documents(data.get("document"), file, documents, problems)
    else:
        # version 1 allowed an empty task description; later versions do not
        leaf.task_description = _text(data, "task_description", problems, empty=version == 1) or ""
        leaf.seeds = _skill_seeds(data, version, problems)
    return leaf


def _version(data: dict, branch: str, problems: _Problems) -> int | None:
    if "version" not in data:
        if branch == KNOWLEDGE:
            problems.add("version", "missing: knowledge leaves are version 3 (`version: 3`)")
            return None
        return 1  # the upstream taxonomy's foundational skills have no version: version 1
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version not in MIN_SEEDS:
        problems.add("version", f"{version!r} is not a schema version (1, 2 or 3)")
        return None
    if branch == KNOWLEDGE and version != 3:
        problems.add("version", f"{version}: knowledge leaves are read in version 3 only")
        return None
    return version


def _unknown_keys(data: dict, allowed: Iterable[str], where: str, problems: _Problems) -> None:
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.add(name, f"unknown field (the fields here are {', '.join(allowed)}){hint}")


def _text(data: dict, key: str, problems: _Problems, where: str = "", empty: bool = False):
    name = f"{where}.{key}" if where else key
    if key not in data or data[key] is None:
        problems.add(name, "missing")
        return None
    value = data[key]
    if not isinstance(value, str):
        problems.add(name, f"must be text, not {type(value).__name__} {value!r:.40}")
        return None
    if not value.strip() and not empty:
        problems.add(name, "is empty")
        return None
    return value.strip()


def _optional_text(data: dict, key: str, problems: _Problems, where: str) -> str | None:
    return _text(data, key, problems, where) if key in data else None


def _seed_list(data: dict, version: int, problems: _Problems, what: str) -> list[Any]:
    seeds = data.get("seed_examples")
    if seeds is None:
        problems.add("seed_examples", "missing")
        return []
    if not isinstance(seeds, list):
        problems.add("seed_examples", f"must be a list of {what}, not {type(seeds).__name__}")
        return []
    minimum = MIN_SEEDS[version]
    if len(seeds) < minimum:
        problems.add(
            "seed_examples", f"has {len(seeds)} item(s); version {version} needs at least {minimum}"
        )
    _duplicates(seeds, "seed_examples", problems)
    return seeds


def _duplicates(items: list[Any], where: str, problems: _Problems) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        key = repr(item)
        if key in seen:
            problems.add(f"{where}[{index}]", f"repeats {where}[{seen[key]}]: items must be unique")
        seen.setdefault(key, index)


def _skill_seeds(data: dict, version: int, problems: _Problems) -> tuple[Seed, ...]:
    out = []
    for index, item in enumerate(_seed_list(data, version, problems, "question/answer pairs")):
        where = f"seed_examples[{index}]"
        if not isinstance(item, dict):
            problems.add(where, f"must be a mapping with question and answer, not {item!r:.40}")
            continue
        _unknown_keys(item, SEED_KEYS, where, problems)
        question = _text(item, "question", problems, where)
        answer = _text(item, "answer", problems, where)
        context = _optional_text(item, "context", problems, where)
        if question and answer:
            out.append(Seed(question, answer, context))
    return tuple(out)


def _knowledge_seeds(data: dict, version: int, problems: _Problems) -> tuple[KnowledgeSeed, ...]:
    out = []
    for index, item in enumerate(_seed_list(data, version, problems, "contexts with Q&A")):
        where = f"seed_examples[{index}]"
        if not isinstance(item, dict):
            problems.add(where, "must be a mapping with context and questions_and_answers")
            continue
        _unknown_keys(item, ("context", "questions_and_answers"), where, problems)
        context = _text(item, "context", problems, where)
        pairs = item.get("questions_and_answers")
        qa_where = f"{where}.questions_and_answers"
        if not isinstance(pairs, list):
            problems.add(qa_where, "missing" if pairs is None else "must be a list")
            continue
        if len(pairs) < MIN_KNOWLEDGE_QA:
            problems.add(qa_where, f"has {len(pairs)} item(s); needs at least {MIN_KNOWLEDGE_QA}")
        _duplicates(pairs, qa_where, problems)
        good = []
        for j, pair in enumerate(pairs):
            pair_where = f"{qa_where}[{j}]"
            if not isinstance(pair, dict):
                problems.add(pair_where, "must be a mapping with question and answer")
                continue
            question = _text(pair, "question", problems, pair_where)
            answer = _text(pair, "answer", problems, pair_where)
            if question and answer:
                good.append((question, answer))
        if context:
            out.append(KnowledgeSeed(context, tuple(good)))
    return tuple(out)


# --------------------------------------------------------------------------- documents


def _documents(
    document: Any, file: Path, documents: Path | None, problems: _Problems
) -> tuple[Document, ...]:
    if document is None:
        problems.add("document", "missing (knowledge leaves name their documents)")
        return ()
    if not isinstance(document, dict):
        problems.add("document", f"must be a mapping, not {type(document).__name__}")
        return ()
    _unknown_keys(document, DOCUMENT_KEYS, "document", problems)
    patterns = document.get("patterns")
    if not isinstance(patterns, list) or not patterns:
        problems.add(
            "document.patterns", "must be a non-empty list of glob patterns, e.g. ['*.md']"
        )
        return ()
    bad = [p for p in patterns if not isinstance(p, str) or not p.strip()]
    if bad:
        problems.add("document.patterns", f"every pattern must be non-empty text, got {bad[0]!r}")
        return ()
    _duplicates(patterns, "document.patterns", problems)
    folder = _documents_folder(document, file, documents, problems)
    if folder is None:
        return ()
    found: dict[Path, None] = {}
    for pattern in patterns:
        matched = sorted(path for path in folder.glob(pattern) if path.is_file())
        if not matched:
            problems.add("document.patterns", f"{pattern!r} matches no file in {folder}")
        found.update(dict.fromkeys(matched))
    out = []
    for path in found:
        name = path.relative_to(folder).as_posix()
        if path.suffix.lower() not in TEXT_SUFFIXES:
            problems.add(
                "document.patterns",
                f"{name}: only text documents ({', '.join(TEXT_SUFFIXES)}) are read; convert "
                "others to Markdown first (e.g. PDFs with docling)",
            )
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.add("document.patterns", f"{name}: cannot be read as UTF-8 text ({exc})")
            continue
        if not text.strip():
            problems.add("document.patterns", f"{name}: is empty")
            continue
        out.append(Document(name, text))
    return tuple(out)


GIT_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.I)


def _documents_folder(
    document: dict, file: Path, documents: Path | None, problems: _Problems
) -> Path | None:
    """The local folder holding the leaf's documents (see the module docstring)."""
    local = document.get("local_path")
    if local is not None:
        if not isinstance(local, str) or not local.strip():
            problems.add("document.local_path", "must be a folder path")
            return None
        folder = (file.parent / local).resolve()
        if not folder.is_dir():
            problems.add("document.local_path", f"{local!r}: no such folder ({folder})")
            return None
        return folder
    repo = document.get("repo")
    if not isinstance(repo, str) or not repo.strip():
        problems.add(
            "document",
            "needs local_path (a folder of documents, relative to this file) or repo",
        )
        return None
    if "commit" not in document:
        problems.add("document.commit", "missing (with repo, InstructLab's schema names a commit)")
    if repo.startswith("file://"):
        local_repo = Path(urllib.parse.unquote(urllib.parse.urlsplit(repo).path))
    elif not GIT_URL.match(repo):
        local_repo = file.parent / repo
    else:
        local_repo = None
    if local_repo is not None:
        if not local_repo.is_dir():
            problems.add("document.repo", f"{repo!r}: no such folder ({local_repo.resolve()})")
            return None
        return local_repo.resolve()
    name = repo.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git")
    if documents is not None:
        beneath = documents / name
        return (beneath if beneath.is_dir() else documents).resolve()
    commit = document.get("commit") or "<commit>"
    problems.add(
        "document.repo",
        f"{repo!r} is a git repository, and generate reads documents only from local files (it "
        f"never goes on the network): clone it (git clone {repo} {name} && git -C {name} "
        f"checkout {commit}) and pass --documents <the folder holding {name}/>, or set "
        "document.local_path to a folder of the documents",
    )
    return None


# --------------------------------------------------------------------------- chunks


def chunk_words(text: str, size: int) -> list[str]:
    """`text` in chunks of at most `size` words, cut between paragraphs where possible (a
    paragraph longer than `size` is cut between words); whitespace inside paragraphs kept. A
    last chunk under a quarter of `size` joins the one before it (which may then exceed `size`
    by that much) rather than being a fragment on its own."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for paragraph in paragraphs:
        words = len(paragraph.split())
        if words > size:
            if current:
                chunks.append("\n\n".join(current))
                current, count = [], 0
            tokens = paragraph.split()
            chunks.extend(" ".join(tokens[i : i + size]) for i in range(0, len(tokens), size))
            continue
        if count + words > size and current:
            chunks.append("\n\n".join(current))
            current, count = [], 0
        current.append(paragraph)
        count += words
    if current:
        if chunks and count < size * SHORT_TAIL:
            chunks[-1] += "\n\n" + "\n\n".join(current)  # no tiny last chunk on its own
        else:
            chunks.append("\n\n".join(current))
    return chunks
