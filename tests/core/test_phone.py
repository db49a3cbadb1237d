import pytest

from core.phone import mask_phone, normalize_phone


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("0708374149", "254708374149"),
        ("0110374149", "254110374149"),
        ("708374149", "254708374149"),
        ("+254708374149", "254708374149"),
        ("254708374149", "254708374149"),
        ("254110374149", "254110374149"),
        ("+254 708 374 149", "254708374149"),
        ("0708-374-149", "254708374149"),
    ],
)
def test_accepted_forms_normalise_to_twelve_digits(typed, stored):
    assert normalize_phone(typed) == stored


@pytest.mark.parametrize(
    "typed",
    ["", "07083741490", "0808374149", "25470837414", "+255708374149", "abc", "2547083741a9", "0"],
)
def test_anything_else_is_refused(typed):
    assert normalize_phone(typed) is None


def test_masking_keeps_only_the_ends():
    assert mask_phone("254708374149") == "2547******49"
