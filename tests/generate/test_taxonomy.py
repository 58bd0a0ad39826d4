"""Reading and validating a taxonomy: the bundled one, every schema rule with its message, the
documents' locations, the chunks. No server."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from axolotl_ual.errors import DataError, UsageError
from axolotl_ual.generate.taxonomy import (
    COMPOSITIONAL,
    FOUNDATIONAL,
    FREEFORM,
    GROUNDED,
    KNOWLEDGE,
    chunk_words,
    read_taxonomy,
)

from .support import TAXONOMY

SKILL = {
    "version": 3,
    "created_by": "someone",
    "task_description": "Answer a riddle.",
    "seed_examples": [{"question": f"Riddle {i}?", "answer": f"Answer {i}."} for i in range(5)],
}
KNOWLEDGE_LEAF = {
    "version": 3,
    "created_by": "someone",
    "domain": "Trains",
    "document_outline": "A railway.",
    "seed_examples": [
        {
            "context": f"Context {i}.",
            "questions_and_answers": [
                {"question": f"Q{i}.{j}?", "answer": f"A{i}.{j}."} for j in range(3)
            ],
        }
        for i in range(5)
    ],
    "document": {"local_path": "docs", "patterns": ["*.md"]},
}


def write_leaf(root, path: str, data) -> None:
    folder = root / path
    folder.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (folder / "qna.yaml").write_text(text)


def knowledge_taxonomy(root, document=None, **changes):
    leaf = copy.deepcopy(KNOWLEDGE_LEAF)
    if document is not None:
        leaf["document"] = document
    leaf.update(changes)
    write_leaf(root, "knowledge/trains", leaf)
    (root / "knowledge/trains/docs").mkdir(exist_ok=True)
    (root / "knowledge/trains/docs/line.md").write_text("The line is 14 km long.\n")
    return root / "knowledge/trains/qna.yaml"


def problems(root, **options) -> str:
    with pytest.raises(DataError) as error:
        read_taxonomy(root, **options)
    return str(error.value)


def test_the_bundled_taxonomy():
    leaves = read_taxonomy(TAXONOMY)
    got = [(leaf.path, leaf.branch, leaf.kind, leaf.version) for leaf in leaves]
    assert got == [  # LAB's order: knowledge, foundational, compositional
        ("knowledge/transport/lanterne_valley_railway", KNOWLEDGE, KNOWLEDGE, 3),
        ("foundational_skills/reasoning/unit_conversion", FOUNDATIONAL, FREEFORM, 1),
        ("compositional_skills/extraction/grounded/action_items", COMPOSITIONAL, GROUNDED, 3),
        ("compositional_skills/writing/freeform/haiku", COMPOSITIONAL, FREEFORM, 3),
    ]
    knowledge = leaves[0]
    assert [d.name for d in knowledge.documents] == ["lanterne_valley_railway.md"]
    assert len(knowledge.knowledge_seeds) == 5
    assert all(len(seed.pairs) == 3 for seed in knowledge.knowledge_seeds)
    grounded = leaves[2]
    assert all(seed.context for seed in grounded.seeds)
    assert read_taxonomy(TAXONOMY, include=["*/haiku"])[0].path.endswith("haiku")
    assert len(read_taxonomy(TAXONOMY, include=["compositional_skills"])) == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"created_by": None}, "qna.yaml: created_by: missing"),
        ({"task_description": ""}, "qna.yaml: task_description: is empty"),
        (
            {"task_descripton": "x"},
            "qna.yaml: task_descripton: unknown field (the fields here are version, created_by, task_description, seed_examples); did you mean 'task_description'?",
        ),
        ({"version": 4}, "qna.yaml: version: 4 is not a schema version (1, 2 or 3)"),
        ({"version": "3"}, "qna.yaml: version: '3' is not a schema version"),
        (
            {"seed_examples": SKILL["seed_examples"][:4]},
            "qna.yaml: seed_examples: has 4 item(s); version 3 needs at least 5",
        ),
        (
            {"seed_examples": [*SKILL["seed_examples"], SKILL["seed_examples"][1]]},
            "qna.yaml: seed_examples[5]: repeats seed_examples[1]: items must be unique",
        ),
        (
            {"seed_examples": [{"question": "Q?"}, *SKILL["seed_examples"]]},
            "qna.yaml: seed_examples[0].answer: missing",
        ),
        (
            {"seed_examples": [{"question": "Q?", "answer": 3}, *SKILL["seed_examples"]]},
            "qna.yaml: seed_examples[0].answer: must be text, not int 3",
        ),
        (
            {
                "seed_examples": [
                    {"question": "Q?", "answer": "A", "contxt": "c"},
                    *SKILL["seed_examples"],
                ]
            },
            "seed_examples[0].contxt: unknown field",
        ),
        (
            {"seed_examples": "none"},
            "qna.yaml: seed_examples: must be a list of question/answer pairs, not str",
        ),
    ],
)
def test_a_bad_skill_leaf_names_the_file_the_field_and_the_problem(tmp_path, change, expected):
    leaf = {**SKILL, **change}
    leaf = {k: v for k, v in leaf.items() if v is not None}
    write_leaf(tmp_path, "compositional_skills/riddles", leaf)
    message = problems(tmp_path)
    assert str(tmp_path / "compositional_skills/riddles/qna.yaml") in message
    assert expected in message


def test_a_v1_skill_without_version_needs_one_seed(tmp_path):
    leaf = {k: v for k, v in SKILL.items() if k != "version"}
    write_leaf(
        tmp_path,
        "foundational_skills/riddles",
        {**leaf, "seed_examples": leaf["seed_examples"][:1]},
    )
    (only,) = read_taxonomy(tmp_path)
    assert only.version == 1 and only.branch == FOUNDATIONAL and len(only.seeds) == 1


def test_every_problem_of_every_leaf_at_once(tmp_path):
    write_leaf(tmp_path, "compositional_skills/a", {**SKILL, "created_by": ""})
    write_leaf(tmp_path, "compositional_skills/b", "version: 3\nseed_examples: [\n")
    write_leaf(tmp_path, "misc/c", SKILL)
    write_leaf(tmp_path, "compositional_skills/d", SKILL)  # fine
    message = problems(tmp_path)
    assert "has 3 problem(s)" in message
    assert "compositional_skills/a/qna.yaml: created_by: is empty" in message
    assert "compositional_skills/b/qna.yaml: line 3, column 1: not valid YAML" in message
    assert (
        "misc/c/qna.yaml: a leaf must be under knowledge/, foundational_skills/ or compositional_skills/"
        in message
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"version": None}, "version: missing: knowledge leaves are version 3"),
        ({"domain": None}, "domain: missing"),
        ({"document_outline": None}, "document_outline: missing"),
        (
            {"seed_examples": KNOWLEDGE_LEAF["seed_examples"][:2]},
            "seed_examples: has 2 item(s); version 3 needs at least 5",
        ),
        (
            {
                "seed_examples": [
                    {"context": "c", "questions_and_answers": [{"question": "q", "answer": "a"}]},
                    *KNOWLEDGE_LEAF["seed_examples"],
                ]
            },
            "seed_examples[0].questions_and_answers: has 1 item(s); needs at least 3",
        ),
        (
            {"seed_examples": [{"questions_and_answers": []}, *KNOWLEDGE_LEAF["seed_examples"]]},
            "seed_examples[0].context: missing",
        ),
        ({"document": None}, "document: missing (knowledge leaves name their documents)"),
    ],
)
def test_a_bad_knowledge_leaf_is_named(tmp_path, change, expected):
    file = knowledge_taxonomy(tmp_path)
    leaf = {k: v for k, v in {**KNOWLEDGE_LEAF, **change}.items() if v is not None}
    file.write_text(yaml.safe_dump(leaf))
    message = problems(tmp_path)
    assert f"{file}: {expected}" in message


GIT = {
    "repo": "https://github.com/someone/railway-docs.git",
    "commit": "abc123",
    "patterns": ["*.md"],
}


def test_a_git_repository_is_refused_with_the_clone_command(tmp_path):
    file = knowledge_taxonomy(tmp_path, document=GIT)
    message = problems(tmp_path)
    assert (
        f"{file}: document.repo: 'https://github.com/someone/railway-docs.git' is a git repository"
        in message
    )
    assert (
        "git clone https://github.com/someone/railway-docs.git railway-docs && git -C railway-docs checkout abc123"
        in message
    )
    assert "pass --documents <the folder holding railway-docs/>" in message


def test_documents_from_a_clone_under_documents_dir(tmp_path):
    knowledge_taxonomy(tmp_path / "taxonomy", document=GIT)
    clones = tmp_path / "clones"
    (clones / "railway-docs" / "guide").mkdir(parents=True)
    (clones / "railway-docs" / "guide" / "a.md").write_text("Alpha.\n")
    (clones / "railway-docs" / "b.md").write_text("Beta.\n")
    (leaf,) = read_taxonomy(tmp_path / "taxonomy", documents=clones)
    assert [d.name for d in leaf.documents] == ["b.md"]
    git = {**GIT, "patterns": ["**/*.md"]}
    knowledge_taxonomy(tmp_path / "taxonomy", document=git)
    (leaf,) = read_taxonomy(tmp_path / "taxonomy", documents=clones)
    assert sorted(d.name for d in leaf.documents) == ["b.md", "guide/a.md"]
    with pytest.raises(UsageError, match=r"--documents .*: no such folder"):
        read_taxonomy(tmp_path / "taxonomy", documents=tmp_path / "nowhere")


def test_documents_from_a_local_repo_path(tmp_path):
    docs = tmp_path / "docs-repo"
    docs.mkdir()
    (docs / "x.txt").write_text("Some text.\n")
    for repo in (str(docs), f"file://{docs}", "../../../docs-repo"):
        knowledge_taxonomy(
            tmp_path / "taxonomy", document={"repo": repo, "commit": "c", "patterns": ["*.txt"]}
        )
        (leaf,) = read_taxonomy(tmp_path / "taxonomy")
        assert [d.text for d in leaf.documents] == ["Some text.\n"], repo


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"local_path": "docs", "patterns": ["*.rst"]},
            "document.patterns: '*.rst' matches no file in",
        ),
        (
            {"local_path": "nope", "patterns": ["*.md"]},
            "document.local_path: 'nope': no such folder",
        ),
        ({"local_path": "docs", "patterns": []}, "document.patterns: must be a non-empty list"),
        (
            {"local_path": "docs", "patterns": ["*"], "branch": "x"},
            "document.branch: unknown field",
        ),
        ({"patterns": ["*.md"]}, "document: needs local_path"),
        (
            {"local_path": "docs", "patterns": ["*.pdf"]},
            "document.patterns: paper.pdf: only text documents",
        ),
        ({"local_path": "docs", "patterns": ["empty.md"]}, "document.patterns: empty.md: is empty"),
    ],
)
def test_bad_documents_are_named(tmp_path, document, expected):
    file = knowledge_taxonomy(tmp_path, document=document)
    (file.parent / "docs" / "paper.pdf").write_bytes(b"%PDF-1.4")
    (file.parent / "docs" / "empty.md").write_text("\n")
    message = problems(tmp_path)
    assert f"{file}: {expected}" in message


def test_the_taxonomy_folder_itself(tmp_path):
    with pytest.raises(UsageError, match="no such folder"):
        read_taxonomy(tmp_path / "missing")
    with pytest.raises(DataError, match=r"no qna\.yaml file"):
        read_taxonomy(tmp_path)
    shutil.copytree(TAXONOMY, tmp_path / "t")
    with pytest.raises(UsageError, match="no leaf matches --leaf nothing"):
        read_taxonomy(tmp_path / "t", include=["nothing"])


def test_chunks_keep_every_word_in_order_and_cut_between_paragraphs():
    paragraphs = [
        " ".join(f"p{i}w{j}" for j in range(n)) for i, n in enumerate([40, 30, 50, 130, 10, 5])
    ]
    text = "\n\n".join(paragraphs)
    chunks = chunk_words(text, 100)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())
    assert [len(c.split()) for c in chunks] == [70, 50, 100, 30 + 10 + 5]
    assert chunks[0] == paragraphs[0] + "\n\n" + paragraphs[1]  # whole paragraphs
    # a short last piece joins the chunk before it instead of standing alone
    assert [len(c.split()) for c in chunk_words("a " * 100 + "\n\n" + "b " * 20, 100)] == [120]
    assert chunk_words("", 100) == []


def test_sdg_hub_knowledge_flow_rows():
    from axolotl_ual.generate.sdg_hub import REQUIRED_COLUMNS, knowledge_flow_rows

    knowledge, skill = read_taxonomy(TAXONOMY)[:2]
    rows = knowledge_flow_rows(knowledge, 300)
    assert len(rows) == 3 and all(set(REQUIRED_COLUMNS) <= set(row) for row in rows)
    assert " ".join(r["document"] for r in rows).split() == knowledge.documents[0].text.split()
    assert [r["icl_document"] for r in rows] == [s.context for s in knowledge.knowledge_seeds[:3]]
    assert rows[0]["icl_query_3"] == knowledge.knowledge_seeds[0].pairs[2][0]
    with pytest.raises(ValueError, match="not a knowledge leaf"):
        knowledge_flow_rows(skill)
