"""The replies each step accepts (strictly), and the loopback teacher's answers to every prompt."""

from __future__ import annotations

import pytest

from axolotl_ual.elicit.fake_server import Request
from axolotl_ual.generate import prompts as p
from axolotl_ual.generate.fake_teacher import reply_for, step_of
from axolotl_ual.generate.prompts import Candidate, Unparsable
from axolotl_ual.generate.steps import Item
from axolotl_ual.generate.taxonomy import read_taxonomy

from .support import TAXONOMY


@pytest.mark.parametrize(
    ("step", "text", "value"),
    [
        (p.QUESTION_FILTER, "Fits the task. <score>1</score>", 1),
        (p.QUESTION_FILTER, "<think>maybe <score>0</score></think>Fine. <score>1</score>", 1),
        (p.QUESTION_FILTER, "<score>0</score> and again <score>0</score>", 0),
        (p.ANSWER_RATING, "Correct but brief.\n<score> 2 </score>", 2),
        (p.RELEVANCY, "<SCORE>2</SCORE>", 2),
    ],
)
def test_scores_that_parse(step, text, value):
    assert p.parse_score(step, text) == value


@pytest.mark.parametrize(
    ("step", "text", "why"),
    [
        (p.QUESTION_FILTER, "Keep it: 1", "no <score>"),
        (p.QUESTION_FILTER, "<score>2</score>", "not an integer from 0 to 1"),
        (p.ANSWER_RATING, "<score>0</score>", "not an integer from 1 to 3"),
        (p.ANSWER_RATING, "<score>2.5</score>", "not an integer from 1 to 3"),
        (p.ANSWER_RATING, "<score>2</score> no, <score>3</score>", "several different scores"),
        (p.RELEVANCY, "<score>two</score>", "not an integer from 0 to 2"),
        (p.RELEVANCY, "<score></score>", "not an integer"),
    ],
)
def test_scores_that_do_not(step, text, why):
    with pytest.raises(Unparsable, match=why):
        p.parse_score(step, text)


def test_verdicts_answers_items_and_pairs():
    assert p.parse_verdict("Supported. <verdict>yes</verdict>") is True
    assert p.parse_verdict("<verdict>NO</verdict>") is False
    for bad in ("YES", "<verdict>MAYBE</verdict>", "<verdict>YES</verdict><verdict>NO</verdict>"):
        with pytest.raises(Unparsable):
            p.parse_verdict(bad)
    assert p.parse_answer("Sure!\n<answer>\n  42 km.\n</answer>\n") == "42 km."
    for bad in (
        "42 km.",
        "<answer>cut short",
        "<answer></answer>",
        "<answer>a</answer><answer>b</answer>",
    ):
        with pytest.raises(Unparsable):
            p.parse_answer(bad)
    text = "<question> One? </question>\n<question></question>\n<question>cut <question>Two?</question><question>cut"
    assert p.parse_items(p.QUESTIONS, text) == ["One?", "Two?"]
    with pytest.raises(Unparsable, match="no non-empty <context>"):
        p.parse_items(p.CONTEXTS, "Here is a context: the sea.")
    pairs = "<question>Q1?</question> <answer>A1.</answer>\n<question>Q2?</question>\n<question>Q3?</question><answer>A3.</answer>"
    assert p.parse_pairs(pairs) == [("Q1?", "A1."), ("Q3?", "A3.")]
    with pytest.raises(Unparsable):
        p.parse_pairs("<answer>A.</answer><question>Q?</question>")


def every_prompt():
    """One prompt of every step, from the bundled taxonomy's leaves."""
    leaves = {leaf.kind: leaf for leaf in read_taxonomy(TAXONOMY)}
    skill, grounded, knowledge = leaves["freeform"], leaves["grounded"], leaves["knowledge"]
    asked = Candidate(context="Notes: Ann will call Bob.", question="Who calls?")
    answered = Candidate(context="The line is 14 km long.", question="How long?", answer="14 km.")
    return {
        p.CONTEXTS: p.contexts_messages(grounded, 0),
        p.QUESTIONS: p.questions_messages(skill, 1, 4, None),
        p.QUESTION_FILTER: p.question_filter_messages(grounded, asked),
        p.ANSWER: p.answer_messages(skill, Candidate(question="Question abc-1: x?"), 2),
        p.ANSWER_RATING: p.answer_rating_messages(skill, answered),
        p.KNOWLEDGE_QA: p.knowledge_qa_messages(
            knowledge, "The line is 14 km long. It has a viaduct.", 0, 2
        ),
        p.FAITHFULNESS: p.faithfulness_messages(answered),
        p.RELEVANCY: p.relevancy_messages(answered),
    }


def test_the_loopback_teacher_recognizes_and_answers_every_step():
    for step, messages in every_prompt().items():
        request = Request(0, 0.0, {"messages": messages}, None)
        assert step_of(request) == step
        item = Item("k", None, step, 0, "", messages, Candidate())
        value = item.parse(reply_for(step, request.prompt))  # the fake reply is in the form asked
        if step == p.QUESTIONS:
            assert len(value) == 4 and value[0].startswith("Question ")
        if step == p.KNOWLEDGE_QA:
            assert len(value) == 2 and value[0][1] in (
                "The line is 14 km long.",
                "It has a viaduct.",
            )
        if step == p.ANSWER:
            assert value.startswith("A placeholder answer to Question abc-1")
    # elicit's judge prompts are not mistaken for generate's
    judge = Request(0, 0.0, {"messages": [{"role": "user", "content": "Rate 1-10: Q?"}]}, None)
    assert step_of(judge) is None


def test_seed_examples_are_rotated_and_grounded_prompts_show_the_context():
    leaves = {leaf.kind: leaf for leaf in read_taxonomy(TAXONOMY)}
    skill = leaves["freeform"]
    shown = [
        [
            s.question
            for s in skill.seeds
            if s.question in p.questions_messages(skill, r, 3, None)[1]["content"]
        ]
        for r in range(len(skill.seeds))
    ]
    assert all(len(questions) == p.EXAMPLES_SHOWN for questions in shown)
    assert {q for questions in shown for q in questions} == {s.question for s in skill.seeds}
    context = "Stand-up: Kim will file the report by Monday."
    grounded = p.questions_messages(leaves["grounded"], 0, 3, context)[1]["content"]
    assert context in grounded and "Write 3 new questions" in grounded
