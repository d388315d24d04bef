"""The explorer: compose a toy scene (animals, colours, a layout seed) or give an image path, ask about an animal,
pick a method and a head, and see the answer, the top heads and the map. Live in Jupyter and Colab; every
control's callback is plain Python (`Explorer.update`), so tests drive it without a browser."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from . import attribution
from .errors import LlavamechError
from .examples import composed
from .explain import normalise_map
from .patches import METHODS, patch_map
from .plots import shade_map

NONE = "(none)"


class Explorer:
    """`Explorer(model, animals, colours).widget` is the user interface; `.last` the latest result."""

    def __init__(self, model, animals: list[str], colours: list[str], means=None):
        if not model.is_multimodal:
            raise LlavamechError(f"{model.name} is text-only: the explorer maps image patches; load a Llava model")
        if isinstance(animals, str) or isinstance(colours, str) or len(animals) < 2 or not len(colours):
            raise LlavamechError("the explorer composes scenes of two or three animals: give at least two animals "
                                 f"and one colour, got animals={animals!r}, colours={colours!r}")
        unknown = [w for w in [*animals, *colours] if not model.knows(w)]
        if unknown:
            raise LlavamechError(f"{unknown[0]!r} is not in {model.name}'s vocabulary; use words of its world")
        self.model, self.means, self.last = model, means, {}
        pick = lambda options, value, label: W.Dropdown(options=options, value=value, description=label,
                                                        layout=W.Layout(width="200px"))
        self.animals = [pick([NONE] + animals, animals[i] if i < 2 else NONE, f"animal {i + 1}") for i in range(3)]
        self.colours = [pick(colours, colours[(3 * i + 1) % len(colours)], f"colour {i + 1}") for i in range(3)]
        self.layout = W.IntSlider(value=0, min=0, max=50, description="layout")
        self.path = W.Text(value="", placeholder="or an image path", description="image")
        self.asked = pick(animals, animals[0], "ask about")
        self.method = pick(list(METHODS), "tool", "method")
        a = model.anatomy
        self.head = pick(["best"] + [f"{l}_{h}" for l in range(a.n_layers) for h in range(a.n_heads)], "best", "head")
        self.message, self.output = W.HTML(), W.Output()
        controls = [*self.animals, *self.colours, self.layout, self.path, self.asked, self.method, self.head]
        for control in controls:
            control.observe(lambda change: self.update(), names="value")
        scene_box = W.VBox([W.HBox([a, c]) for a, c in zip(self.animals, self.colours)] + [self.layout, self.path])
        self.widget = W.VBox([W.HBox([scene_box, W.VBox([self.asked, self.method, self.head])]), self.message,
                              self.output])
        self.update()

    def example(self):
        pairs = [(a.value, c.value) for a, c in zip(self.animals, self.colours) if a.value != NONE]
        if len({a for a, _ in pairs}) < len(pairs) or len({c for _, c in pairs}) < len(pairs) or not pairs:
            raise LlavamechError("give one to three different animals in different colours")
        return composed(pairs, self.asked.value, self.layout.value)

    def update(self) -> dict:
        """Recompute for the current controls and redraw; returns (and keeps in `.last`) what is shown."""
        try:
            image = self.path.value.strip() or self.example().image
            question = f"What is the color of the {self.asked.value}?"
            pm = patch_map(self.model, image, question, self.method.value, means=self.means)
            x = pm.explanation
            grid, label = pm.scores, self.method.value
            if self.head.value != "best":
                layer, head = map(int, self.head.value.split("_"))
                scores = attribution.position_scores(x.trace, layer, head, positions=x.trace.positions.image_positions)
                grid, label = normalise_map(scores).reshape(x.grid_shape).cpu().numpy(), f"head {self.head.value}"
        except LlavamechError as e:
            self.message.value = f"<b>{e}</b>"
            self.last = {"error": str(e)}
            return self.last
        heads = ", ".join(f"{h['layer']}_{h['head']} ({h['score']:.2f})" for h in x.top_heads[:5])
        self.message.value = (f"<b>{question}</b> → <b>{x.answer}</b> (p = {x.answer_prob:.2f}); "
                              f"top heads: {heads}")
        self.last = {"answer": x.answer, "grid": np.asarray(grid), "map": label, "top heads": x.top_heads[:5]}
        self.output.clear_output(wait=True)
        with self.output:
            fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
            axes[0].imshow(x.view)
            axes[0].axis("off")
            shade_map(axes[1], x.view, grid)
            axes[0].set_title("what the model sees", fontsize=9)
            axes[1].set_title(label, fontsize=9)
            plt.show()
        return self.last
