"""The shared argument checks: every class of input a careless user gives."""

import numpy as np
import pytest

from mri_widgets._checks import check_bool, check_choice, check_index, check_int, parse_layers


@pytest.mark.parametrize("spec, want", [
    (None, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
    (12, [12]), (np.int64(3), [3]), (-1, [12]),
    ("12", [12]), ("1", [1]), (" 2 ", [2]), ("-1", [12]),
    ("3-5", [3, 4, 5]), ("3..5", [3, 4, 5]), ("3:5", [3, 4]), ("1,3,5-6", [1, 3, 5, 6]), ("1 2", [1, 2]),
    ([1, 1, 2], [1, 2]), (range(0, 13, 6), [0, 6, 12]), (np.array([2, 4]), [2, 4]), ((5,), [5]),
])
def test_parse_layers_accepts(spec, want):
    assert parse_layers(spec, 13) == want


def test_parse_layers_string_is_never_split_into_characters():
    assert parse_layers("12", 13) == [12]
    assert parse_layers("10-11", 13) == [10, 11]


@pytest.mark.parametrize("spec, exc", [
    ([1.7], TypeError), (1.0, TypeError), (True, TypeError), ([True], TypeError), (["1"], TypeError),
    (b"12", TypeError), (np.zeros((2, 2), int), TypeError), (object(), TypeError),
    ("abc", ValueError), ("5-3", ValueError), ("", ValueError), ([], ValueError), (",", ValueError),
    (13, IndexError), ([-14], IndexError), ("0-13", IndexError),
])
def test_parse_layers_rejects(spec, exc):
    with pytest.raises(exc):
        parse_layers(spec, 13)


def test_parse_layers_default_and_error_class():
    class MyError(ValueError):
        pass

    assert parse_layers(None, 30, default=[28, 29]) == [28, 29]
    with pytest.raises(MyError, match="empty"):
        parse_layers([], 5, error=MyError)
    assert parse_layers([3, 1], 5, sort=True) == [1, 3]


def test_check_int():
    assert check_int(np.int32(4), "k", min=1) == 4
    for bad in (True, 2.0, "3", None):
        with pytest.raises(TypeError, match="k must be an integer"):
            check_int(bad, "k")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        check_int(0, "k", min=1)
    with pytest.raises(ValueError, match="<= 10"):
        check_int(11, "k", max=10)


def test_check_bool_and_choice_and_index():
    assert check_bool(np.bool_(True), "norm") is True
    for bad in ("no", 0, 1, None):
        with pytest.raises(TypeError, match="True or False"):
            check_bool(bad, "norm")
    assert check_choice("mean", ("mean", "last"), "pool") == "mean"
    with pytest.raises(ValueError, match="'mean', 'last'"):
        check_choice("max", ("mean", "last"), "pool")
    with pytest.raises(ValueError):
        check_choice([1], ("a",), "pool")
    assert check_index(-1, 4, "position") == 3
    with pytest.raises(IndexError, match=r"0\.\.3"):
        check_index(4, 4, "position")


# ---- every public entry point reads layers the same way (issue: "12" captured layers 1 and 2) ----

def test_string_layers_are_layer_numbers_everywhere(tiny):
    from mri_widgets import ActivationAreas, Corpus, NeuronScan, flow_graph
    from mri_widgets.testing import SAMPLE_TEXTS

    lm = tiny("gpt2")  # 3 layers: resid has 4 (0 = embeddings)
    cap = lm.capture(["hi there"], sites=["resid", "mlp"], layers="2", progress=False)
    assert list(cap.layers["resid"]) == [2] and list(cap.layers["mlp"]) == [2]
    cap = lm.capture(["hi there"], sites=["mlp"], layers="0-1", progress=False)
    assert list(cap.layers["mlp"]) == [0, 1]
    scan = NeuronScan.run(lm, SAMPLE_TEXTS[:3], k=2, layers="1:3", progress=False)
    assert list(scan.layers) == [1, 2]
    corpus = Corpus(SAMPLE_TEXTS[:6], ["a", "b"] * 3)
    areas = ActivationAreas(lm, corpus, grid=2, layers="1,3", progress=False)
    assert areas.layer_ids == [1, 3]
    assert flow_graph(lm, "one two three", layers="1-2").graph["layers"] == [1, 2]
    for bad in ([1.7], 1.7, [True], b"12", "twelve", [[1]]):
        with pytest.raises((TypeError, ValueError)):
            lm.capture(["hi"], sites=["mlp"], layers=bad, progress=False)
        with pytest.raises((TypeError, ValueError)):
            NeuronScan.run(lm, ["hi"], k=1, layers=bad, progress=False)
    with pytest.raises(IndexError, match="out of range"):
        lm.capture(["hi"], sites=["mlp"], layers="12", progress=False)
