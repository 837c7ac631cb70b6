"""llmcourse.checks: silent on success, a message that locates the problem on failure."""

from __future__ import annotations

import pytest
import torch

from llmcourse.checks import check, check_close, check_dtype, check_shape, check_tokens


def test_passing_checks_print_nothing(capsys):
    x = torch.randn(3, 4)
    check_close(x, x.clone())
    check_close(x, x + 1e-7)
    check_shape(x, (3, 4))
    check_dtype(x, torch.float32)
    check_tokens([1, 2, 3], torch.tensor([1, 2, 3]))
    check(True, "never shown")
    check_close(torch.tensor([float("-inf"), 1.0]), torch.tensor([float("-inf"), 1.0]))
    assert capsys.readouterr() == ("", "")


def test_shape_mismatch():
    with pytest.raises(AssertionError, match=r"out: wrong shape: got \(3, 4\), expected \(4, 3\)"):
        check_close(torch.zeros(3, 4), torch.zeros(4, 3), name="out")


def test_dtype_mismatch():
    with pytest.raises(AssertionError, match="wrong dtype: got torch.float64, expected torch.float32"):
        check_close(torch.zeros(2, dtype=torch.float64), torch.zeros(2))


def test_value_mismatch_reports_max_error_and_where():
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    actual[0, 0] = 0.1
    with pytest.raises(AssertionError) as info:
        check_close(actual, expected, atol=1e-3, name="weights")
    msg = str(info.value)
    assert "max abs error 0.5 at index (1, 2)" in msg
    assert "got 0.5, expected 0" in msg
    assert "2 of 6 elements" in msg


def test_nan_is_reported_with_a_hint():
    with pytest.raises(AssertionError, match=r"nan where a finite value is expected; the first at index \(1,\)"):
        check_close(torch.tensor([0.5, float("nan")]), torch.tensor([0.5, 0.5]))


def test_not_a_tensor():
    with pytest.raises(AssertionError, match="expected a tensor, got NoneType"):
        check_close(None, torch.zeros(2))
    check_close([1.0, 2.0], torch.tensor([1.0, 2.0]), check_dtype=False)


def test_tokens_first_mismatch():
    with pytest.raises(AssertionError, match="first mismatch at position 2: got 9, expected 3"):
        check_tokens([1, 2, 9, 4], [1, 2, 3, 4])
    with pytest.raises(AssertionError, match="the first 2 tokens agree, but got 2 tokens, expected 3"):
        check_tokens([1, 2], [1, 2, 3])


def test_check_works_without_assert_statements():
    with pytest.raises(AssertionError, match="explained"):
        check(False, "explained")
