"""The book's own checks (llavamech.checks): its identity check, against the independent computations of
test_attribution.py."""
from tests.unit.test_attribution import ATOL


def test_the_books_identity_check_holds_on_every_model(model, example):
    """llavamech.checks.identity_errors, which the book prints, within 1e-5 on every class: for Gemma its heads
    carry the model's own norm after attention, norm(o) / o, and its brute-force Imp the model's logit cap."""
    from llavamech.checks import identity_errors

    errors = identity_errors(model, **example)
    assert max(errors.values()) < ATOL, errors
