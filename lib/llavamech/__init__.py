"""llavamech: mechanistic interpretability of Llava in visual question answering (arXiv 2411.10950).

    import llavamech
    model = llavamech.load("toy-llava")
    explanation = model.explain("scene.png", question="What is the color of the dog?")
"""
from .errors import LlavamechError
from .models import Model, load

__all__ = ["LlavamechError", "Model", "load"]
__version__ = "0.1.0"
