"""The organism's building blocks (llavamech.organism.build): the word-level tokenizer, whose multi-question
vocabulary keeps every colour-organism id, and the tiny random Vicuna and Llava that the tests run on."""
from functools import partial

import pytest

from llavamech.organism import build
from tests.conftest import assert_a_seeded_real_class


def test_the_multi_vocabulary_extends_the_colour_one_keeping_its_ids():
    colour, multi = build.build_tokenizer().get_vocab(), build.build_tokenizer(multi=True).get_vocab()
    assert all(multi[w] == i for w, i in colour.items()) and len(multi) > len(colour)
    assert [colour[t] for t in build.SPECIAL] == list(range(len(build.SPECIAL)))
    tok = build.build_tokenizer()
    ids = tok("What is the color of the dog ?")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids and tok.eos_token_id not in ids


BUILDERS = {"llama": (build.tiny_vicuna, "LlamaForCausalLM"),
            "mistral": (partial(build.tiny_vicuna, family="mistral"), "MistralForCausalLM"),
            "qwen2": (partial(build.tiny_vicuna, family="qwen2"), "Qwen2ForCausalLM"),
            "llava": (build.tiny_llava, "LlavaForConditionalGeneration"),
            "llava-next": (partial(build.tiny_llava, next=True), "LlavaNextForConditionalGeneration")}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_builder_gives_its_real_class_seeded(name):
    assert_a_seeded_real_class(*BUILDERS[name])


def test_kv_heads_are_honoured_and_qwen2_biases_are_made_non_zero():
    assert build.tiny_vicuna(kv_heads=1)[0].config.num_key_value_heads == 1
    llava = build.tiny_llava(kv_heads=2)[0]
    assert llava.config.text_config.num_key_value_heads == 2 and llava.config.vision_feature_layer == -2
    qwen2 = build.tiny_vicuna(family="qwen2")[0]
    biases = [p for n, p in qwen2.named_parameters() if n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias"))]
    assert biases and all(p.abs().max() > 0 for p in biases)
