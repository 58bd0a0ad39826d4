"""Judge prompts and reply parsing."""

import math

import pytest

from axolotl_ual.elicit.prompts import (
    LOGPROB_SCALE,
    VERBALIZED_SCALE,
    TokenPosition,
    expected_digit,
    judge_messages,
    parse_score,
    token_digit,
    transcript,
)
from axolotl_ual.elicit.samples import Message, Sample


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("7", 7.0),
        ("Score: 7", 7.0),
        ("7/10", 7.0),
        ("**7**", 7.0),
        ("  8\n", 8.0),
        ("10", 10.0),
        ("1", 1.0),
        ("Rating: 8 out of 10", 8.0),
        ("uncertainty score: 3", 3.0),
        ("I would say 6 out of 10.", 6.0),
        ("6.5", 6.5),
        ('"9"', 9.0),
        ("7.\n\nThe answer depends on taste, 2 or 3 options.", 7.0),
        ("The task has one answer (2+2), so Score: 2", 2.0),
        ("<think>could be 3 or 9</think>\n4", 4.0),
        ("**Score**: 7", 7.0),
        ("Uncertainty: 3", 3.0),
        ("(7)", 7.0),
    ],
)
def test_parse_score_accepts(reply, score):
    assert parse_score(reply, 1, 10) == score


@pytest.mark.parametrize(
    "reply",
    [
        "11",
        "0",
        "",
        None,
        "   ",
        "I think it is moderately uncertain.",
        "7 or 8",
        "Score: 11",
        "-3",
        "<think>probably 7",
        "between 3 and 5",
        "12/10",
        "a 3 or a 4 on a scale of 1-10",
        # a stray number in prose or garbage is not a score (issue 12)
        "...{6~...",
        "There are 2 valid answers, so it is moderately uncertain",
        "I'd rate this a 3 on a scale of 1-10.",
        "On a scale from 1 to 10, this is a 4.",
        "The answer: 5",
        "7 {~",
        "Score: 7-8",
        "rating 6 or 7",
        "The uncertainty of 2 answers is high",
    ],
)
def test_parse_score_rejects(reply):
    assert parse_score(reply, 1, 10) is None


def test_parse_score_respects_the_scale():
    assert parse_score("0", 0, 9) == 0.0
    assert parse_score("10", 0, 9) is None


def test_token_digit():
    assert [token_digit(t) for t in ["7", " 7", "**7", "7 ", "\n3"]] == [7, 7, 7, 7, 3]
    assert [token_digit(t) for t in ["10", "x", "", None, "²", "7."]] == [None] * 6


def test_expected_digit_renormalizes_over_digit_tokens():
    alternatives = [
        ("3", math.log(0.5)),
        (" 4", math.log(0.2)),
        ("4", math.log(0.1)),
        ("The", math.log(0.2)),
    ]
    expected, mass = expected_digit([TokenPosition("3", math.log(0.5), alternatives)])
    assert mass == pytest.approx(0.8)
    assert expected == pytest.approx((3 * 0.5 + 4 * 0.3) / 0.8)


def test_expected_digit_uses_the_first_position_that_chose_a_digit():
    positions = [
        TokenPosition("**", math.log(0.9), [("**", math.log(0.9)), ("2", math.log(0.1))]),
        TokenPosition("6", math.log(0.6), [("6", math.log(0.6)), ("8", math.log(0.4))]),
    ]
    expected, mass = expected_digit(positions)
    assert expected == pytest.approx(6 * 0.6 + 8 * 0.4)
    assert mass == pytest.approx(1.0)


def test_expected_digit_adds_the_chosen_token_when_it_is_not_among_the_alternatives():
    expected, _ = expected_digit([TokenPosition("5", math.log(0.5), [("9", math.log(0.5))])])
    assert expected == pytest.approx(7.0)


def test_expected_digit_without_a_digit():
    assert expected_digit([TokenPosition("Hello", -0.1, [("Hi", -2.0)])]) is None
    assert expected_digit([]) is None


def test_judge_messages_show_the_sample_and_the_scale():
    sample = Sample("k", (Message("user", "What is 2+2?"), Message("assistant", "4")))
    system, user = judge_messages(sample, VERBALIZED_SCALE, 1000)
    assert system["role"] == "system" and user["role"] == "user"
    assert "### User\nWhat is 2+2?" in user["content"] and "### Assistant\n4" in user["content"]
    assert "from 1 to 10" in user["content"]
    assert "single digit from 0 to 9" in judge_messages(sample, LOGPROB_SCALE, 1000)[1]["content"]


def test_transcript_cuts_long_messages_in_the_middle():
    sample = Sample("k", (Message("user", "A" * 5000 + "B" * 5000),))
    text = transcript(sample, 1000)
    assert len(text) < 1200
    assert text.startswith("### User\nAAAA") and text.endswith("BBBB")
    assert "characters omitted" in text
