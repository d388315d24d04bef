"""The model organism: the toy world (`world`), builders of models from the real classes' configs (`build`), the
training recipe (`recipe`) and the model cards (`card`). The analysis library reaches it only through
`llavamech.load(name)` and example sets (`llavamech.examples`)."""
