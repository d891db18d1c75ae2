"""Input conversion and validation: what users hand the model, checked before any learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spela_stream.errors import LabelError, NonFiniteError, WidthError
from spela_stream.inputs import MAX_ABS, as_matrix, as_vector, check_label, dict_rows


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (np.int64(4), 4), ("cat", "cat"), (np.str_("dog"), "dog"), (True, True)],
)
def test_check_label_returns_plain_python_values(value: object, expected: object) -> None:
    out = check_label(value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value", [1.0, None, [1], (2,), b"x", np.float32(2.0)])
def test_check_label_rejects_other_types(value: object) -> None:
    with pytest.raises(LabelError, match="labels must be int, str or bool"):
        check_label(value)


def test_as_vector_dict_uses_names_in_order() -> None:
    assert as_vector({"b": 2, "a": 1}, ["a", "b"], 2).tolist() == [1.0, 2.0]
    assert as_vector({"b": 2, "a": 1}, None, None).tolist() == [2.0, 1.0]  # first sight
    with pytest.raises(WidthError, match=r"missing \['c'\], unknown \['d'\]"):
        as_vector({"a": 1, "d": 2}, ["a", "c"], 2)


def test_as_vector_names_the_bad_feature() -> None:
    with pytest.raises(NonFiniteError, match=r"feature index\(es\) \[1\]"):
        as_vector(np.array([0.0, np.nan, 1.0]), None, 3)
    with pytest.raises(NonFiniteError, match="rescale"):
        as_vector(np.array([0.0, MAX_ABS * 10]), None, 2)
    with pytest.raises(WidthError, match="2 features, the model was built for 3"):
        as_vector(torch.tensor([1.0, 2.0]), None, 3)
    with pytest.raises(WidthError, match="1-d vector"):
        as_vector(np.ones((2, 2)), None, None)
    with pytest.raises(WidthError, match="not numbers"):
        as_vector({"a": "high"}, None, None)


def test_as_matrix_forms_agree_and_name_row_and_feature() -> None:
    X = np.arange(6.0).reshape(2, 3)
    from_array = as_matrix(X, None, 3)
    from_rows = as_matrix([X[0], X[1]], None, 3)
    from_dicts = as_matrix([dict(zip("xyz", r, strict=True)) for r in X], None, 3)
    assert np.array_equal(from_array, from_rows) and np.array_equal(from_array, from_dicts)
    assert as_matrix(torch.as_tensor(X), None, 3).tolist() == X.tolist()
    bad = X.copy()
    bad[1, 2] = np.inf
    with pytest.raises(NonFiniteError, match=r"\(row, feature\) \(1, 2\)"):
        as_matrix(bad, None, 3)
    with pytest.raises(WidthError, match="different widths"):
        as_matrix([np.ones(2), np.ones(3)], None, None)
    assert as_matrix([], None, 4).shape == (0, 4)


def test_one_vectors_single_check_decides_as_the_full_checks_do() -> None:
    # a sum of squares gates one sample; past it the elementwise checks decide and name the place
    at_limit = np.array([MAX_ABS, -MAX_ABS, MAX_ABS])  # squares sum past MAX_ABS**2: still fine
    assert as_vector(at_limit, None, 3).tolist() == at_limit.tolist()
    for bad, kind in ((np.inf, "NaN or infinity"), (-np.inf, "NaN or infinity"), (np.nan, "NaN")):
        row = np.array([1.0, -np.inf, 2.0]) if bad == -np.inf else np.array([1.0, bad, 2.0])
        with pytest.raises(NonFiniteError, match=rf"{kind}.*feature index\(es\) \[1\]"):
            as_vector(row, None, 3)
    with pytest.raises(NonFiniteError, match=r"feature index\(es\) \[0\] exceed"):
        as_vector(np.array([-MAX_ABS * 1.5, 0.0]), None, 2)
    for arr in (np.arange(3), np.array([True, False]), np.arange(3, dtype=np.float32) / 3):
        out = as_vector(arr, None, None)
        assert out.dtype == np.float64 and out.tolist() == np.asarray(arr, np.float64).tolist()


def test_one_dict_of_every_known_name_reads_as_the_general_path() -> None:
    """dict_rows' one-dict shortcut (every known name, no new one) gives the row the general
    path (two rows) gives, whatever the key order and value types; a value it cannot take
    quickly (a NaN, too large, a string, a sum of squares over the quick test's bound) goes
    the general way, with its errors."""
    index = {"a": 0, "b": 1, "c": 2}
    for row in [
        {"c": 3, "a": 1.5, "b": True},
        {"a": np.float32(0.1), "b": np.int64(-2), "c": -0.0},
        {"b": MAX_ABS * 0.9, "a": MAX_ABS * 0.9, "c": 1.0},  # over the quick bound, valid
    ]:
        one, new = dict_rows([row], index)
        two, _ = dict_rows([row, row], index)
        assert new == [] and one.shape == (1, 3) and one.dtype == np.float64
        assert one.tobytes() == two[:1].tobytes()
    with pytest.raises(NonFiniteError, match=r"feature\(s\) \['b'\]"):
        dict_rows([{"a": 1.0, "b": np.nan, "c": 0.0}], index)
    with pytest.raises(NonFiniteError, match=r"\['c'\]"):
        dict_rows([{"c": MAX_ABS * 10, "a": 1.0, "b": 0.0}], index)
    with pytest.raises(WidthError, match=r"\['b'\] are not numbers"):
        dict_rows([{"a": 1.0, "b": "x", "c": 0.0}], index)
    out, new = dict_rows([{"a": 1.0, "b": 2.0}], index)  # one missing: NaN
    assert new == [] and np.isnan(out[0, 2]) and out[0, :2].tolist() == [1.0, 2.0]
