"""The explorer's callbacks, driven from Python: changing a control changes what is shown."""
import numpy as np

from llavamech.widgets import Explorer
from tests.conftest import tiny


def test_controls_drive_the_explorer():
    explorer = Explorer(tiny("llava"), ["dog", "cat", "horse"], ["white", "black", "red", "green"])
    first = explorer.last
    assert first["map"] == "tool" and first["grid"].shape == (4, 4)
    explorer.method.value = "attention"
    assert explorer.last["map"] == "attention" and not np.allclose(explorer.last["grid"], first["grid"])
    explorer.head.value = "1_2"
    assert explorer.last["map"] == "head 1_2"
    explorer.layout.value = 7
    assert not np.allclose(explorer.last["grid"], first["grid"])
    explorer.colours[1].value = explorer.colours[0].value
    assert "different colours" in explorer.last["error"] and "different colours" in explorer.message.value
    explorer.path.value = "/no/such/image.png"
    assert "not found" in explorer.last["error"]
