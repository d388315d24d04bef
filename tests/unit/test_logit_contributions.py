"""The linear logit contribution z(v)_w that chapters 2–3 report beside Imp: additive over layers and heads."""
import torch


def test_layer_logit_contributions_sum_to_the_final_logit(model, example):
    """z is linear: the embedding's, every attention layer's and every FFN layer's z(v)_w add up to the final
    logit of w under the frozen-norm readout (the final residual is their sum)."""
    from llavamech import attribution as A
    trace = model.trace(**example)
    z = A.layer_logit_contributions(trace)
    total = float(z["attn"].sum() + z["ffn"].sum()) + float(A.logit_contribution(trace, trace.resid_in[0]))
    assert abs(total - float(A.logit_contribution(trace, trace.final_resid))) < 1e-3
    assert torch.allclose(A.head_logit_contributions(trace).sum(1), z["attn"], atol=1e-4)
