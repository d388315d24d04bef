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


def test_published_checkpoints_have_their_published_sizes():
    """Counted on the meta device from the configs written out in llavamech.memory: the model cards' sizes, in
    billions to their two decimals."""
    sizes = {memory.qwen2_vl_7b_config: 8.29, memory.qwen2_5_vl_7b_config: 8.29, memory.qwen3_vl_8b_config: 8.77,
             memory.gemma3_4b_config: 4.30,
             memory.llava_onevision_7b_config: 8.03}
    for config, billions in sizes.items():
        assert round(memory.parameters(config()) / 1e9, 2) == billions, config.__name__


def test_check_fits_names_the_memory_needed_and_the_way_out():
    from llavamech.errors import LlavamechError
    config = memory.llava_15_7b_config()
    card = 24 * memory.GB
    memory.check_fits(config, "bfloat16", card)                       # 7B in bfloat16 fits a 24 GB card
    with pytest.raises(LlavamechError) as e:
        memory.check_fits(config, "float32", card, where="cuda:0")
    message = str(e.value)
    assert "\n" not in message and "cuda:0 has 24.0 GB free" in message
    assert f"{memory.explain_needs(config, 'float32'):.1f} GB in float32" in message
    assert "--dtype bfloat16" in message and "--device-map auto" in message
    with pytest.raises(LlavamechError, match="use --device-map auto"):
        memory.check_fits(config, "bfloat16", 8 * memory.GB)


def test_internvl3_8b_config_gives_256_tokens_a_tile_and_its_size():
    """InternVL3-8B: 448 px tiles of 32 x 32 patches of 14, pixel-shuffled 2 x 2 into the 256 tokens its processor
    counts; InternViT-300M + Qwen2.5-7B, 7.94 B parameters (the model card's size, not checked offline)."""
    config = memory.internvl3_8b_config()
    vision = config.vision_config
    assert (vision.image_size[0] // vision.patch_size[0]) ** 2 * config.downsample_ratio ** 2 == 256
    assert config.image_seq_length == 256 and round(memory.parameters(config) / 1e9, 2) == 7.94


def test_mistral_small_31_config_gives_tokens_of_28_px_and_its_size():
    """Mistral-Small-3.1-24B: patches of 14 merged 2 x 2 into tokens of 28 px, at most 55 x 55 of them at its 1,540 px;
    a Pixtral tower + a 40-layer Mistral, 24.01 B parameters (the model card says 24 B; its config not read offline)."""
    config = memory.mistral_small_31_config()
    assert config.vision_config.patch_size * config.spatial_merge_size == 28 and 1540 // 28 == 55
    assert config.text_config.model_type == "mistral" and config.vision_config.rope_parameters["rope_theta"] == 10000
    assert round(memory.parameters(config) / 1e9, 2) == 24.01


def test_glm41v_9b_config_gives_tokens_of_28_px_sandwich_norms_and_its_size():
    """GLM-4.1V-9B-Thinking: patches of 14 merged 2 x 2 into tokens of 28 px; GLM-4's language model (sandwich norms,
    rotary angles on half of each 128-wide head, 2 key/value heads); 10.29 B parameters (the model card says 10.3 B;
    its config not read offline)."""
    config = memory.glm41v_9b_config()
    vision, text = config.vision_config, config.text_config
    assert vision.patch_size * vision.spatial_merge_size == 28 and text.model_type == "glm4v_text"
    assert text.hidden_size // text.num_attention_heads == 128 and text.num_key_value_heads == 2
    assert sum(text.rope_parameters["mrope_section"]) * 2 == 128 * text.rope_parameters["partial_rotary_factor"]
    assert round(memory.parameters(config) / 1e9, 2) == 10.29
