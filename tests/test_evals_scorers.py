"""Scorers and extraction on tricky outputs; expected values written by hand."""

from fractions import Fraction

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
    ("50%", 50.0), ("1e3", 1000.0), ("7.", 7.0), ("abc", None), ("1/0", None), ("nan", None), ("inf", None),
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
    assert not S.numeric(rel_tol=1e-3)("about 1234.1", sample("1234")).correct  # integer target: exact
    assert S.numeric(rel_tol=1e-3)("about 1234.6", sample("1234.5")).correct  # tolerance for non-integers
    assert not sc("about 1234.6", sample("1234.5")).correct
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


# -- exactness (issue 17): what a careful human grader decides, written by hand ------------------

@pytest.mark.parametrize("output, target, correct", [
    # integers compare exactly, however large, whatever the tolerance
    (r"\boxed{9066850}", "9066850", True),
    (r"\boxed{9066851}", "9066850", False),
    (r"\boxed{9066750}", "9066850", False),
    ("so the product is 9066849", "9066850", False),
    (r"\boxed{123456789012345678901234567890}", "123456789012345678901234567890", True),
    (r"\boxed{123456789012345678901234567891}", "123456789012345678901234567890", False),
    (r"\boxed{9066850.0}", "9066850", True),  # the same value written as a decimal
    (r"\boxed{9066850.5}", "9066850", False),
    (r"\boxed{9.06685e6}", "9066850", True),
    (r"\boxed{9.0669e6}", "9066850", False),  # rounded: not the integer
    (r"\boxed{9.06685 \times 10^{6}}", "9066850", True),
    # negatives and signs
    (r"\boxed{-42}", "-42", True),
    (r"\boxed{42}", "-42", False),
    (r"\boxed{-42}", "42", False),
    ("\\boxed{\u221242}", "-42", True),  # U+2212 minus sign
    ("The answer is \u22125.", "-5", True),
    (r"\boxed{+5}", "5", True),
    (r"\boxed{(-5)}", "-5", True),
    ("x - 5", "-5", False),  # subtraction, not a negative five
    (r"\boxed{- 5}", "-5", False),  # a sign stands right before its digits: this box holds no number
    (r"\boxed{- 5}", "5", False),
    # thousands separators: one convention per number, groups of three
    (r"\boxed{9,066,850}", "9066850", True),
    (r"\boxed{9 066 850}", "9066850", True),
    ("\\boxed{9\u202f066\u202f850}", "9066850", True),  # narrow no-break space (SI style)
    (r"\boxed{9\,066\,850}", "9066850", True),  # LaTeX thin space
    (r"\boxed{9_066_850}", "9066850", True),
    (r"\boxed{9,066,850}", "9,066,850", True),  # the target may be written with separators too
    (r"\boxed{90,66,850}", "9066850", False),  # not groups of three: several numbers, no single answer
    (r"\boxed{9,066 850}", "9066850", False),  # mixed separators
    (r"\boxed{1,5}", "1.5", False),  # no decimal comma
    # leading zeros
    (r"\boxed{033}", "33", True),
    (r"\boxed{33}", "033", True),
    (r"\boxed{0}", "000", True),
    # fractions, decimals, percent
    (r"\boxed{0.5}", "1/2", True),
    (r"\boxed{\frac{1}{2}}", "0.5", True),
    (r"\boxed{-\dfrac{3}{4}}", "-0.75", True),
    (r"\boxed{2/4}", "1/2", True),
    (r"\boxed{0.333}", "1/3", False),  # default tolerance 1e-6 for non-integers
    (r"\boxed{0.3333333}", "1/3", True),
    (r"\boxed{50\%}", "50", True),  # % is a unit
    (r"\boxed{50\%}", "0.5", False),
    # trailing punctuation and markup
    ("The answer is 42.", "42", True),
    ("The answer is **42**!", "42", True),
    ("Final answer: $-3$.", "-3", True),
    (r"\boxed{42.}", "42", True),
    (r"\boxed{12 \text{ apples}}", "12", True),
    (r"\boxed{\$1,234}", "1234", True),
    # which number counts
    (r"\boxed{3, 4}", "4", False),  # two numbers in the box: no single answer
    (r"\boxed{x+1}", "1", False),  # an expression is not its last number
    (r"\boxed{3x}", "3", False),
    (r"\boxed{2^{10}}", "1024", False),  # not evaluated
    (r"\boxed{\sqrt{4}}", "4", False),
    (r"\boxed{1 1/2}", "1.5", False),
    (r"\boxed{x = 12}", "12", True),
    (r"\boxed{3 + 4 = 7}", "7", True),
    (r"I first got \boxed{6}, then \boxed{7}", "7", True),  # the last box
    (r"\boxed{7}, so 8 is wrong", "8", False),  # the box beats later numbers
    ("The answer is 7, not 8.", "7", True),  # the answer phrase beats the last number
    ("The answer is 7, not 8.", "8", False),
    ("3 + 4 = 7", "7", True),  # no box, no phrase: the last number
    ("I tried 7 but it is 8", "7", False),
    # scientific notation in free text
    ("roughly 2.5e3", "2500", True),
    ("2.5E-3", "0.0025", True),
    ("2.5e-3", "0.025", False),
    (None, "3", False),
])
def test_numeric_exactness(output, target, correct):
    assert S.numeric()(output, sample(target)).correct is correct


@pytest.mark.parametrize("text, value", [
    ("9066850", 9066850), ("-9066850", -9066850), ("9,066,850", 9066850), ("9 066 850", 9066850),
    ("9_066_850", 9066850), ("033", 33), ("+5", 5), ("\u22125", -5), ("1/3", Fraction(1, 3)),
    (r"\frac{1}{3}", Fraction(1, 3)), ("0.1", Fraction(1, 10)), ("1e-3", Fraction(1, 1000)),
    ("12345678901234567890123", 12345678901234567890123),  # beyond float precision, kept exact
    ("3, 4", None), ("x+1", None), ("3x", None), (r"\sqrt{2}", None), ("1/0", None), ("1e5000", None),
])
def test_read_number_is_exact(text, value):
    assert S.read_number(text) == value


def test_numbers_match_tolerance_only_for_non_integer_targets():
    assert not S.numbers_match(Fraction(9066851), Fraction(9066850), rel_tol=0.5)
    assert S.numbers_match(Fraction(1001, 1000), Fraction(1), rel_tol=0.5) is False  # 1 is an integer
    assert S.numbers_match(Fraction(2001, 1000), Fraction(2), abs_tol=1) is False
    assert S.numbers_match(Fraction(2501, 1000), Fraction(5, 2), abs_tol=0.001)
    assert not S.numbers_match(Fraction(2502, 1000), Fraction(5, 2), abs_tol=0.001)
    assert S.numbers_match(Fraction(2502, 1000), Fraction(5, 2), rel_tol=0.001)  # 0.002 <= 0.001 * 2.502
    with pytest.raises(ValueError, match="tolerances"):
        S.numeric(rel_tol=-1)


def test_boxed_scorer_compares_integers_exactly():
    b = S.boxed()
    assert not b(r"\boxed{9066851}", sample("9066850")).correct
    assert b(r"\boxed{9,066,850}", sample("9066850")).correct
    assert not S.boxed(rel_tol=0.1)(r"\boxed{9066851}", sample("9066850")).correct
    assert S.boxed(rel_tol=0.1)(r"\boxed{2.6}", sample("2.5")).correct
    assert not S.date()(r"\boxed{1001}", sample("1000")).correct  # day counts exactly
    assert S.date()(r"\boxed{1,000}", sample("1000")).correct


def test_scorers_say_what_they_compare():
    assert repr(S.numeric()) == "numeric(rel_tol=1e-06, abs_tol=0.0)"
    assert "integers exactly" in S.numeric().comparison and "rel_tol=1e-06" in S.numeric().comparison
    assert "exactly" in S.numeric(rel_tol=0).comparison and "rel_tol" not in S.numeric(rel_tol=0).comparison
    assert repr(S.boxed()) == "boxed(compare='auto', rel_tol=0.0, abs_tol=0.0)"
    for name in S.SCORERS:
        scorer = S.get(name)
        assert scorer.comparison and repr(scorer).startswith(name + "(")


@pytest.mark.parametrize("name", ["workbench.evals.scorers", "workbench.evals.tasks"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
