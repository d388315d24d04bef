"""Progress bars (llavamech.progress): every item comes through; TQDM_DISABLE set (as the book's build sets it)
silences the bar, unset or 0 shows it."""
import pytest

from llavamech.progress import progress


@pytest.mark.parametrize("value, silent", [("1", True), ("true", True), (None, False), ("", False), ("0", False)])
def test_the_bar_is_silent_when_disabled_and_yields_every_item(monkeypatch, capsys, value, silent):
    if value is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", value)
    bar = progress(iter(range(5)), "counting")
    assert bar.disable is silent          # read before the loop: a finished bar closes, and a closed one is disabled
    assert list(bar) == [0, 1, 2, 3, 4]
    shown = capsys.readouterr().err
    assert shown == "" if silent else "counting" in shown
