"""The tiny random models of the families beyond Llava (llavamech.tiny_vl) that the tests run on: the real classes,
seeded, with what the identities need made non-trivial (Qwen's q/k/v biases, Gemma's gains), and a soft-cap
where asked for."""
from functools import partial

import pytest

from llavamech import tiny_vl
from tests.conftest import assert_a_seeded_real_class

BUILDERS = {"qwen2-vl": (partial(tiny_vl.tiny_qwen_vl, version="2"), "Qwen2VLForConditionalGeneration"),
            "qwen2.5-vl": (partial(tiny_vl.tiny_qwen_vl, version="2.5"), "Qwen2_5_VLForConditionalGeneration"),
            "qwen3-vl": (partial(tiny_vl.tiny_qwen_vl, version="3"), "Qwen3VLForConditionalGeneration"),
            "gemma3": (tiny_vl.tiny_gemma3, "Gemma3ForConditionalGeneration"),
            "gemma3-text": (tiny_vl.tiny_gemma3_text, "Gemma3ForCausalLM"),
            "llava-onevision": (tiny_vl.tiny_llava_onevision, "LlavaOnevisionForConditionalGeneration"),
            "idefics3": (tiny_vl.tiny_idefics3, "Idefics3ForConditionalGeneration"),
            "smolvlm": (tiny_vl.tiny_smolvlm, "SmolVLMForConditionalGeneration"),
            "internvl": (tiny_vl.tiny_internvl, "InternVLForConditionalGeneration"),
            "internvl-qwen3": (partial(tiny_vl.tiny_internvl, text="qwen3"), "InternVLForConditionalGeneration"),
            "mistral3": (tiny_vl.tiny_mistral3, "Mistral3ForConditionalGeneration"),
            "mistral3-ministral3": (partial(tiny_vl.tiny_mistral3, text="ministral3"),
                                    "Mistral3ForConditionalGeneration"),
            "glm4v": (tiny_vl.tiny_glm4v, "Glm4vForConditionalGeneration")}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_builder_gives_its_real_class_seeded(name):
    assert_a_seeded_real_class(*BUILDERS[name])


def test_biases_and_gains_are_not_their_zero_defaults_and_the_cap_is_set_where_asked():
    qwen = tiny_vl.tiny_qwen_vl(version="2")[0]
    biases = [p for n, p in qwen.named_parameters() if n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias"))]
    assert biases and all(p.abs().max() > 0 for p in biases)
    gemma = tiny_vl.tiny_gemma3_text()[0]
    gains = [p for n, p in gemma.named_parameters() if n.endswith("norm.weight")]
    assert gains and all(p.abs().max() > 0 for p in gains)    # Gemma's norms scale by 1 + g: g = 0 would hide g
    assert gemma.config.final_logit_softcapping is None
    assert tiny_vl.tiny_gemma3_text(soft_cap=0.1)[0].config.final_logit_softcapping == 0.1
    tok = tiny_vl.qwen_tokenizer()
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in tiny_vl.QWEN_SPECIAL[1:])


def test_internvl_is_over_qwen2_with_biases_or_qwen3_with_qk_norm_gains():
    qwen2, qwen3 = tiny_vl.tiny_internvl()[0], tiny_vl.tiny_internvl(text="qwen3")[0]
    assert (qwen2.config.text_config.model_type, qwen3.config.text_config.model_type) == ("qwen2", "qwen3")
    biases = [p for n, p in qwen2.named_parameters() if "language_model" in n and n.endswith("k_proj.bias")]
    assert biases and all(p.abs().max() > 0 for p in biases)
    gains = [p for n, p in qwen3.named_parameters() if n.endswith(("q_norm.weight", "k_norm.weight"))]
    assert gains and all((p != 1).any() for p in gains)     # ones would hide the q/k norms' gains


def test_mistral3_is_over_mistral_or_ministral3_with_gains_drawn_and_the_pixtral_processor():
    mistral, tok, processor = tiny_vl.tiny_mistral3()
    ministral = tiny_vl.tiny_mistral3(text="ministral3")[0]
    assert (mistral.config.text_config.model_type, ministral.config.text_config.model_type) == ("mistral", "ministral3")
    gains = [p for n, p in mistral.named_parameters() if n.endswith("norm.weight") and "vision_tower" not in n]
    assert gains and all((p != 1).any() for p in gains)     # ones would hide the norms' gains
    assert type(processor).__name__ == "PixtralProcessor" and processor.spatial_merge_size == 2
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in tiny_vl.MISTRAL_SPECIAL[1:])


def test_glm4v_has_sandwich_norms_with_gains_drawn_a_fused_ffn_biases_and_half_rotary_heads():
    glm, tok, processor = tiny_vl.tiny_glm4v()
    layer = glm.model.language_model.layers[0]
    norms = ("post_self_attn_layernorm", "post_attention_layernorm", "post_mlp_layernorm")
    assert all((getattr(layer, name).weight != 1).any() for name in norms)   # ones would hide the norms' gains
    assert hasattr(layer.mlp, "gate_up_proj") and not hasattr(layer.mlp, "gate_proj")
    assert all(layer.self_attn.get_submodule(p).bias.abs().max() > 0 for p in ("q_proj", "k_proj", "v_proj"))
    rope = glm.config.text_config.rope_parameters
    assert rope["partial_rotary_factor"] == 0.5 and sum(rope["mrope_section"]) == layer.self_attn.head_dim // 4
    assert type(processor).__name__ == "Glm4vProcessor" and processor.image_processor.merge_size == 2
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in tiny_vl.GLM_SPECIAL[1:])
