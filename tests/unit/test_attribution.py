"""Every decomposition of the score (the book's appendix A), each checked against an independent computation, float32 to 1e-5;
the linear logit contribution z(v)_w that chapters 2–3 report beside Imp: additive over layers and heads.

The helpers here (`close`, `capture_o_proj_inputs`, `direct_head_output`, `brute_imp`, `ATOL`) are the independent
computations; test_checks.py and test_families.py import them."""
import torch

from llavamech import attribution as A

ATOL = 1e-5


def close(a, b, atol=ATOL):
    assert torch.allclose(a, b, atol=atol, rtol=0), f"max error {float((a - b).abs().max()):.2e}"


class OProj(list):
    """o_proj's inputs at T per layer (the concatenated per-head attention outputs), and for a model with a norm
    after attention (Gemma) that norm's own rescaling of o_proj's output at T, norm(o) / o: what freezing its RMS
    makes of it, read with the test's own hooks."""
    scales: list


def capture_o_proj_inputs(model, kwargs):
    seen, outputs = OProj(), []
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0][0, -1].clone()))
             for layer in model.anatomy.layers]
    hooks += [layer.self_attn.o_proj.register_forward_hook(lambda m, a, o: outputs.append(o[0, -1].clone()))
              for layer in model.anatomy.layers]
    try:
        with torch.no_grad():
            model.hf(**model.inputs(**kwargs))
            seen.scales = [model.anatomy.attn_out_norm(l)(o) / o if model.anatomy.sandwich else 1.0
                           for l, o in enumerate(outputs)]
    finally:
        for h in hooks:
            h.remove()
    return seen


def direct_head_output(model, o_in, layer, head):
    """Head `head`'s slice of o_proj applied to its slice of o_proj's input (then the frozen output norm, where there
    is one): a^{l,h} without the library."""
    a = model.anatomy
    sl = slice(head * a.head_dim, (head + 1) * a.head_dim)
    return o_in.scales[layer] * (a.layers[layer].self_attn.o_proj.weight[:, sl] @ o_in[layer][sl])


def softcap(model, logits):
    cap = getattr(getattr(model.hf.config, "text_config", model.hf.config), "final_logit_softcapping", None)
    return logits if cap is None else cap * torch.tanh(logits / cap)


def brute_imp(model, trace, base, v, token):
    """Imp through the model's own modules: final_norm(h_L) / h_L rescales any x by g/s with s frozen; the logits
    then soft-capped as the model caps them."""
    a = model.anatomy
    with torch.no_grad():
        scale = a.final_norm(trace.final_resid) / trace.final_resid
        z = lambda x: softcap(model, a.lm_head(scale * x))
        return (torch.log_softmax(z(base + v), -1)[token] - torch.log_softmax(z(base), -1)[token]).item()


def test_heads_sum_to_attention_output(model, example):
    trace = model.trace(**example)
    for l in range(model.anatomy.n_layers):
        close(A.head_outputs(trace, l).sum(0), trace.attn_out[l])


def test_positions_sum_to_head_output(model, example):
    trace = model.trace(**example)
    o_in = capture_o_proj_inputs(model, example)
    a = model.anatomy
    for l in range(a.n_layers):
        for h in range(a.n_heads):
            close(A.position_contributions(trace, l, h).sum(0), direct_head_output(model, o_in, l, h))


def test_neurons_sum_to_ffn_output(model, example):
    trace = model.trace(**example)
    for l in range(model.anatomy.n_layers):
        close(A.neuron_contributions(trace, l).sum(0), trace.mlp_out[l])


def test_residual_stream_bookkeeping(model, example):
    trace = model.trace(**example)
    close(trace.resid_in + trace.attn_out, trace.mid)
    close(trace.mid[:-1] + trace.mlp_out[:-1], trace.resid_in[1:])
    close(trace.mid[-1] + trace.mlp_out[-1], trace.final_resid)


def test_frozen_norm_readout_of_final_residual_is_the_logits(model, example):
    trace = model.trace(**example)
    close(A.capped(trace, A.readout(trace, trace.final_resid)), trace.logits,
          atol=1e-4 * float(trace.logits.abs().max()) + ATOL)


def test_layer_imp_matches_brute_force(model, example):
    trace = model.trace(**example)
    scores = A.layer_scores(trace)
    w = trace.top_token
    for l in range(model.anatomy.n_layers):
        assert abs(scores["attn"][l].item() - brute_imp(model, trace, trace.resid_in[l], trace.attn_out[l], w)) < ATOL
        assert abs(scores["ffn"][l].item() - brute_imp(model, trace, trace.mid[l], trace.mlp_out[l], w)) < ATOL


def test_head_position_and_neuron_imp_match_brute_force(model, example):
    trace = model.trace(**example)
    o_in = capture_o_proj_inputs(model, example)
    a = model.anatomy
    w = 9  # a token other than the top-1: the score is defined for any target
    heads = A.head_scores(trace, token=w)
    for l in range(a.n_layers):
        for h in range(a.n_heads):
            expected = brute_imp(model, trace, trace.resid_in[l], direct_head_output(model, o_in, l, h), w)
            assert abs(heads[l, h].item() - expected) < ATOL
    pos = A.position_scores(trace, a.n_layers - 1, 0, token=w)
    u = A.position_contributions(trace, a.n_layers - 1, 0)
    for j in (0, trace.seq_len // 2, trace.seq_len - 1):
        assert abs(pos[j].item() - brute_imp(model, trace, trace.resid_in[-1], u[j], w)) < ATOL
    neurons = A.neuron_scores(trace, 0, token=w)
    c = A.neuron_contributions(trace, 0)
    assert abs(neurons[3].item() - brute_imp(model, trace, trace.mid[0], c[3], w)) < ATOL


def test_logit_contribution_is_additive(model, example):
    trace = model.trace(**example)
    contrib = A.head_logit_contributions(trace)
    layer = A.logit_contribution(trace, trace.attn_out)
    close(contrib.sum(1), layer, atol=1e-4)


def test_imp_of_a_small_vector_keeps_its_own_precision():
    """Imp as dz_w - log1p(sum p0 expm1(dz)) is the log-softmax difference exactly, without its cancellation: for a
    contribution of order 1e-6 it agrees with float64 to 1e-4 of itself, where the difference of two float32
    log-softmaxes of order 1 keeps only their rounding (about 1e-7 absolute, i.e. 10 % of such a small Imp)."""
    torch.manual_seed(0)
    z0, dz = torch.randn(5, 1000) * 4, torch.randn(5, 1000) * 1e-6
    exact = (torch.log_softmax(z0.double() + dz.double(), -1) - torch.log_softmax(z0.double(), -1))[:, 7]
    stable = dz[:, 7] - A._log_partition_increase(z0, dz)
    naive = (torch.log_softmax(z0 + dz, -1) - torch.log_softmax(z0, -1))[:, 7]
    assert torch.allclose(stable.double(), exact, rtol=1e-4, atol=1e-12)
    assert not torch.allclose(naive.double(), exact, rtol=1e-2, atol=1e-12)
    large = torch.randn(5, 1000) * 3      # and where dz is large, the log-sums themselves
    exact = (torch.log_softmax(z0.double() + large.double(), -1) - torch.log_softmax(z0.double(), -1))[:, 7]
    assert torch.allclose((large[:, 7] - A._log_partition_increase(z0, large)).double(), exact, atol=1e-5)


def test_small_and_large_rows_mix_and_broadcast():
    """Rows of a batch take the small-dz form or the log-sums each by its own size (the log-sums computed for the
    large rows only), and base and vectors broadcast against each other either way round."""
    torch.manual_seed(1)
    z0 = torch.randn(3, 1, 500) * 4
    dz = torch.randn(3, 4, 500) * torch.tensor([1e-6, 0.5, 3.0, 1e-3])[:, None]      # small and large rows mixed
    exact = torch.logsumexp(z0.double() + dz.double(), -1) - torch.logsumexp(z0.double(), -1)
    assert torch.allclose(A._log_partition_increase(z0, dz).double(), exact, rtol=1e-4, atol=1e-7)
    one = dz[:1, :1]                                                                 # [1, 1, V] against [3, 1, V]
    exact = torch.logsumexp(z0.double() + one.double(), -1) - torch.logsumexp(z0.double(), -1)
    assert A._log_partition_increase(z0, one).shape == (3, 1)
    assert torch.allclose(A._log_partition_increase(z0, one).double(), exact, rtol=1e-4, atol=1e-7)


def test_layer_logit_contributions_sum_to_the_final_logit(model, example):
    """z is linear: the embedding's, every attention layer's and every FFN layer's z(v)_w add up to the final
    logit of w under the frozen-norm readout (the final residual is their sum)."""
    trace = model.trace(**example)
    z = A.layer_logit_contributions(trace)
    total = float(z["attn"].sum() + z["ffn"].sum()) + float(A.logit_contribution(trace, trace.resid_in[0]))
    assert abs(total - float(A.logit_contribution(trace, trace.final_resid))) < 1e-3
    assert torch.allclose(A.head_logit_contributions(trace).sum(1), z["attn"], atol=1e-4)


def test_the_float32_unembedding_is_converted_again_once_the_weight_changes():
    """Anatomy.unembed converts a half-precision W_U once; a weight modified in place, cast or moved is read anew."""
    import llavamech
    model = llavamech.load("tiny-random-llava", dtype="bfloat16")
    a = model.anatomy
    first = a.unembed()
    assert first.dtype == torch.float32 and a.unembed() is first
    with torch.no_grad():
        a.lm_head.weight.mul_(2)
    assert torch.equal(a.unembed(), a.lm_head.weight.float()) and not torch.equal(a.unembed(), first)
    model.hf.to(torch.float32)
    assert a.unembed().data_ptr() == a.lm_head.weight.data_ptr()      # a float32 W_U is used as it is, not copied


def test_three_half_precision_terms_carry_a_float32_and_its_products():
    """split_float32: three bfloat16 terms sum back to a float32 within 2^-24 of its size, so that products with
    a bfloat16 W_O accumulated in float32 (what torch.bmm's out_dtype does on a GPU; here the same products
    computed in float32) give float32's own product of the mixed values and W_O."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 16, generator=g) * torch.logspace(-3, 3, 16)
    terms = A.split_float32(x)
    assert terms.dtype == torch.bfloat16 and terms.shape == (4, 6, 16)
    total = terms.double().view(4, 3, 2, 16).sum(1)
    assert ((total - x.double()).abs() <= 2 ** -24 * x.double().abs()).all()
    w = (torch.randn(4, 16, 32, generator=g) / 4).to(torch.bfloat16)
    split = torch.bmm(terms.float(), w.float()).view(4, 3, 2, 32).sum(1)
    exact = torch.bmm(x.double(), w.double())
    assert torch.allclose(split.double(), exact, rtol=1e-6, atol=1e-6 * float(exact.abs().max()))
    assert torch.equal(A._products(x, w, split=False), torch.bmm(x, w.float()))   # a CPU: W_O converted
