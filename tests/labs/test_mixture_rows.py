"""Components typed as text: a dropped marker rewrites one row's mean and nothing else."""

import re

import pytest

from posteriorlab.labs.mixture_rows import parse_components, with_mean

TEXT = "0.5, -2, 0, 0.8\n  0.3 2 1 0.6 1.0 0.5 ;0.2, 0, -2.5, 0.7\n"


def test_only_the_mean_of_the_chosen_row_changes():
    moved = with_mean(TEXT, 1, (1.25, -0.5))
    assert moved == "0.5, -2, 0, 0.8\n  0.3 1.250 -0.500 0.6 1.0 0.5 ;0.2, 0, -2.5, 0.7\n"
    before, after = (parse_components(text, max_components=4) for text in (TEXT, moved))
    assert after.means.tolist() == [[-2, 0], [1.25, -0.5], [0, -2.5]]
    assert after.weights.tolist() == before.weights.tolist()
    assert after.covariances.tolist() == before.covariances.tolist()


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, "0.5, 3.000, 4.000, 0.8\n  0.3 2 1 0.6 1.0 0.5 ;0.2, 0, -2.5, 0.7\n"),
        (2, "0.5, -2, 0, 0.8\n  0.3 2 1 0.6 1.0 0.5 ;0.2, 3.000, 4.000, 0.7\n"),
    ],
)
def test_the_other_rows_and_separators_are_byte_identical(index, expected):
    assert with_mean(TEXT, index, (3.0, 4.0)) == expected


def test_a_drop_beyond_the_window_is_clipped_to_it():
    moved = with_mean(TEXT, 0, (-80.0, 51.0))
    assert moved.startswith("0.5, -50.000, 50.000, 0.8\n")
    assert parse_components(moved, max_components=4).means[0].tolist() == [-50, 50]


@pytest.mark.parametrize(
    ("text", "index", "message"),
    [
        ("0.5, -2, 0, 0.8\n0.5, two, 1, 0.6", 0, "Component 2 ('0.5, two, 1, 0.6') is not"),
        ("0.5, -2, 0", 0, "Component 1 has 3 numbers"),
        ("1, 0, 0, -1", 0, "both must be positive"),
        (TEXT, 3, "There is no component 4: the mixture has 3."),
    ],
)
def test_bad_text_or_a_missing_row_raises_naming_it(text, index, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        with_mean(text, index, (1.0, 1.0))
