"""Build models, tokenizer and processor from scratch, with the real models' Hugging Face classes.

Used for `tiny-random-*` (tests, demos) and as the starting point of the model organism. Nothing here
downloads anything: the tokenizer is word-level over the toy world's words and the prompt templates.
"""
from __future__ import annotations

import re

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig,
                          LlamaConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration,
                          LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor, LlavaProcessor,
                          MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # no torchvision needed
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from .world import TQA_TEMPLATE, VQA_TEMPLATE, caption, load_world

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
EXTRA_WORDS = "a and".split()
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's normalisation, as llava-1.5's processor
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CHAT_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
                 "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
                 "{% else %}{{ item['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
                 "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def vocabulary(multi: bool = False) -> list[str]:
    """Every word the toy world's prompts, facts and captions use, in a fixed order. `multi` appends the words of
    every question type (world.json "question_types") after them, so that the colour organism's ids stay as they are."""
    world = load_world()
    texts = [TQA_TEMPLATE.replace("<image>", ""), VQA_TEMPLATE.replace("<image>", ""),
             world.spec["questions"]["tqa_fact"], caption([("x", "y"), ("x", "y")])]
    words = [w for t in texts for w in _template_words(t)] + EXTRA_WORDS
    words += list(world.animals) + list(world.colour_names)
    if multi:
        for qtype in (t for k, t in world.spec["question_types"].items() if k != "about"):
            words += [w for t in (qtype["question"], qtype["answer_prefix"], qtype["fact"] or "") for w in _template_words(t)]
            words += [] if isinstance(qtype["answers"], str) else qtype["answers"]
    return list(dict.fromkeys(w for w in words if w not in "xy"))


def _template_words(template: str) -> list[str]:
    return _words(re.sub(r"\{\w+\}", "", template))


def build_tokenizer(multi: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (Llama-style: <s> prepended, no </s>) with <image> as a special token; `multi`: the
    multi-question organism's, with every question type's words."""
    vocab = {t: i for i, t in enumerate(SPECIAL + vocabulary(multi))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
                                   padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer, image_size: int, patch_size: int) -> LlavaProcessor:
    """llava-1.5's preprocessing scaled down: shortest edge -> image_size, centre crop, CLIP normalisation."""
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                                do_center_crop=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                                resample=3)  # bicubic, as CLIP
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


# The language-model families a Llava can carry (llava-1.5: Llama; LLaVA-NeXT: also Mistral and Qwen2).
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
            "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def llama_config(vocab_size: int, hidden=64, layers=2, heads=4, kv_heads=None, mlp=128, eps=1e-5,
                 family: str = "llama", positions: int = 512):
    return FAMILIES[family][0](vocab_size=vocab_size, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads or heads, rms_norm_eps=eps,
                       max_position_embeddings=positions, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       pad_token_id=3, attn_implementation="eager")


def clip_vision_config(image_size=32, patch=8, hidden=32, layers=2, heads=4, mlp=64) -> CLIPVisionConfig:
    return CLIPVisionConfig(image_size=image_size, patch_size=patch, hidden_size=hidden, intermediate_size=mlp,
                            num_hidden_layers=layers, num_attention_heads=heads, projection_dim=hidden,
                            attn_implementation="eager")


def clip_model(vision: CLIPVisionConfig, tokenizer, seed: int) -> CLIPModel:
    """A CLIP whose text side reads captions ending in '.', pooled there (eos id 2 would select CLIP's legacy
    pooling at the highest token id)."""
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=vision.hidden_size,
                          intermediate_size=vision.intermediate_size, num_hidden_layers=2,
                          num_attention_heads=vision.num_attention_heads, max_position_embeddings=32,
                          projection_dim=vision.projection_dim, bos_token_id=1,
                          eos_token_id=tokenizer.convert_tokens_to_ids("."), pad_token_id=3)
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                projection_dim=vision.projection_dim))


def llava_config(vision: CLIPVisionConfig, text: LlamaConfig, image_token_id: int) -> LlavaConfig:
    n_patches = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", image_seq_length=n_patches,
                       attn_implementation="eager")


def _random_biases(model: torch.nn.Module) -> None:
    """Qwen2 has q/k/v biases, initialised to zero; make them non-zero so that the identities see them."""
    for name, param in model.named_parameters():
        if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            torch.nn.init.normal_(param, std=0.5)


def tiny_vicuna(seed: int = 0, kv_heads: int | None = None, family: str = "llama", **sizes):
    """A tiny randomly initialised causal LM of `family` (llama, mistral, qwen2) and its tokenizer."""
    tok = build_tokenizer()
    torch.manual_seed(seed)
    model = FAMILIES[family][1](llama_config(len(tok), kv_heads=kv_heads, family=family, **sizes))
    _random_biases(model)
    return model.eval(), tok


def tiny_llava(seed: int = 0, kv_heads: int | None = None, image_size: int = 32, patch: int = 8,
               family: str = "llama", next: bool = False, **sizes):
    """A tiny randomly initialised LlavaForConditionalGeneration (or, with `next`, a LlavaNextForConditionalGeneration
    with any-resolution tiles) over a `family` language model, its tokenizer and processor."""
    tok = build_tokenizer()
    vision = clip_vision_config(image_size=image_size, patch=patch)
    # room for every patch and a prompt: Llava-1.5's 24x24 grid alone is 576 positions
    positions = max(512, (image_size // patch) ** 2 + 256)
    text = llama_config(len(tok), kv_heads=kv_heads, family=family, positions=positions, **sizes)
    config = llava_config(vision, text, tok.convert_tokens_to_ids("<image>"))
    if next:
        config = next_config(config, image_size)
    torch.manual_seed(seed)
    model = (LlavaNextForConditionalGeneration if next else LlavaForConditionalGeneration)(config)
    _random_biases(model)
    processor = (next_processor if next else build_processor)(tok, image_size, patch)
    return model.eval(), tok, processor


def _pinpoints(s: int) -> list[list[int]]:
    """LLaVA-NeXT's any-resolution layout scaled down: tiles of the vision tower's size in 1x2, 2x1 and 2x2."""
    return [[s, 2 * s], [2 * s, s], [2 * s, 2 * s]]


def next_config(config: LlavaConfig, image_size: int) -> LlavaNextConfig:
    return LlavaNextConfig(vision_config=config.vision_config, text_config=config.text_config,
                           image_token_id=config.image_token_id, projector_hidden_act="gelu",
                           vision_feature_layer=-2, vision_feature_select_strategy="default",
                           image_grid_pinpoints=_pinpoints(image_size), attn_implementation="eager")


def next_processor(tokenizer, image_size: int, patch_size: int) -> LlavaNextProcessor:
    s = image_size
    images = LlavaNextImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                                        image_grid_pinpoints=_pinpoints(s),
                                        image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3)
    return LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch_size,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=CHAT_TEMPLATE)
