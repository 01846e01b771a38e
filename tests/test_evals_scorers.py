"""Scorers and extraction on tricky outputs; expected values written by hand."""

import pytest

from workbench.evals import scorers as S
from workbench.evals.tasks import Sample


def sample(target, choices=None):
    return Sample("x", "q", target, choices)


@pytest.mark.parametrize("text, expected", [
    (r"\boxed{42}", "42"),
    (r"first \boxed{1} then \boxed{2}", "2"),  # the last one counts
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested braces
    (r"\boxed{ {a}{b} }", "{a}{b}"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5", "5"),
    (r"$\boxed{-3}$.", "-3"),
    (r"\boxed{unclosed", None),  # unbalanced: ignored
    (r"\boxed{1} and \boxed{unclosed", "1"),
    ("no box at all", None),
    ("", None),
    (None, None),
])
def test_extract_boxed(text, expected):
    assert S.extract_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is 42.", "42"),
    ("It costs $1,234.50 in total", "1234.50"),
    ("from 3 to \u22127", "-7"),  # unicode minus
    ("x = 2.5e3", "2.5e3"),
    ("half: 1/2", "1/2"),
    (r"\frac{3}{4}", "3/4"),
    ("version v2 of model7", None),  # digits glued to words are not numbers
    ("no numbers", None),
])
def test_extract_number(text, expected):
    assert S.extract_number(text) == expected


@pytest.mark.parametrize("text, value", [
    ("42", 42.0), ("-2.5", -2.5), ("1,000", 1000.0), ("$5", 5.0), ("3/4", 0.75), (r"\frac{3}{4}", 0.75),
    ("50%", 0.5), ("1e3", 1000.0), ("7.", 7.0), ("abc", None), ("1/0", None), ("nan", None), ("inf", None),
    (None, None),
])
def test_parse_number(text, value):
    assert S.parse_number(text) == value


@pytest.mark.parametrize("text, expected", [
    ("Answer: B", "B"),
    ("The answer is (C).", "C"),
    ("I think A is wrong; the answer is C", "C"),
    ("A good start. (B) is tempting. Final answer: **D**", "D"),
    ("**B**", "B"),
    (r"\boxed{C}", "C"),
    (r"\boxed{\text{(A)}}", "A"),
    ("After checking:\nB\n", "B"),
    ("After checking:\nb)\n", "B"),
    ("the answer is a bit tricky", None),  # lower-case 'a' in prose is not a choice
    ("A good question with no pick", None),
    ("Answer: E", None),  # only 4 choices
    ("answer: E", "E"),  # ... but valid with 5
])
def test_extract_choice(text, expected):
    n = 5 if text == "answer: E" else 4
    assert S.extract_choice(text, n) == expected


def test_choice_scorer_uses_the_number_of_choices():
    s = sample("E", ["1", "2", "3", "4", "5"])
    assert S.choice()("Answer: E", s).value == 1.0
    assert S.choice()("Answer: D", s).value == 0.0
    assert S.choice()(None, s) == S.Score(0.0, None)


def test_numeric_scorer():
    sc = S.numeric()
    assert sc("so the total is 1,234", sample("1234")).correct
    assert sc(r"I get \boxed{0.5}, not 3", sample("1/2")).correct  # boxed wins over the later number
    assert not sc("about 1234.1", sample("1234")).correct
    assert S.numeric(rel_tol=1e-3)("about 1234.1", sample("1234")).correct
    assert not sc("no idea", sample("3")).correct
    assert sc(r"\boxed{x = 12}", sample("12")).correct  # a boxed expression: its number
    assert sc(None, sample("3")) == S.Score(0.0, None)


def test_exact_and_boxed_scorers():
    assert S.exact()("  Paris. ", sample("paris")).correct
    assert S.exact()(r"it is \boxed{\text{Paris}}", sample("Paris")).correct
    assert not S.exact()("Paris, France", sample("Paris")).correct
    b = S.boxed()
    assert b(r"work... \boxed{033}", sample("33")).correct  # AIME answers compare as numbers
    assert not b("the answer is 33", sample("33")).correct  # boxed only
    assert not b(r"\boxed{33} wait, no: \boxed{34}", sample("33")).correct  # the last box counts
    assert b(r"\boxed{x+1}", sample("x + 1")).value == 0.0  # text compare is whitespace-exact inside
    assert b(r"\boxed{Paris}", sample("paris")).correct


def test_list_and_date_scorers():
    assert S.number_list()(r"\boxed{-3, 1, 10}", sample("-3, 1, 10")).correct
    assert S.number_list()("sorted:\n-3,1,10\nDone.", sample("-3, 1, 10")).correct
    assert not S.number_list()(r"\boxed{1, -3, 10}", sample("-3, 1, 10")).correct
    assert S.date()("It is 2024-3-1.", sample("2024-03-01")).correct  # zero padding normalised
    assert not S.date()(r"\boxed{2024-03-02} (not 2024-03-01)", sample("2024-03-01")).correct


def test_get_by_name():
    assert S.get("numeric")("7", sample("7")).correct
    with pytest.raises(ValueError, match="unknown scorer"):
        S.get("fuzzy")
