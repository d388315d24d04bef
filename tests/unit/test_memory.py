"""The memory table's arithmetic is the real thing: parameters counted on the meta device equal the model's, and the
trace's size formula equals the numbers a trace actually keeps."""
import pytest

from llavamech import memory


def test_meta_parameter_count_is_the_models(model):
    assert memory.parameters(model.hf.config) == sum(p.numel() for p in model.hf.parameters())


@pytest.mark.parametrize("all_positions", [False, True])
def test_trace_size_formula_counts_what_a_trace_keeps(model, example, all_positions):
    trace = model.trace(**example, all_positions=all_positions)
    kept = sum(getattr(trace, f).numel() for f in ("logits", "resid_in", "attn_out", "mid", "mlp_out", "final_resid",
                                                  "attn_weights", "values", "neuron_acts", "resid_in_all",
                                                  "attn_out_all", "mlp_out_all") if getattr(trace, f) is not None)
    text = getattr(model.hf.config, "text_config", model.hf.config)
    assert memory.trace_numbers(text, trace.seq_len, all_positions) == kept


def test_llava_15_7b_has_its_published_size():
    table = memory.memory_table()
    assert 7.0 < table.loc["float32", "parameters (B)"] < 7.1      # llava-1.5-7b: 7.06 B
    assert table.loc["bfloat16", "weights"] == pytest.approx(table.loc["float32", "weights"] / 2)
