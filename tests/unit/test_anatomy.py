"""What llavamech.anatomy reads off each model class."""


def test_eps_comes_from_the_config(model):
    text_config = getattr(model.hf.config, "text_config", model.hf.config)
    assert model.anatomy.eps == text_config.rms_norm_eps
    norm = model.anatomy.final_norm
    assert getattr(norm, "variance_epsilon", getattr(norm, "eps", None)) == model.anatomy.eps
