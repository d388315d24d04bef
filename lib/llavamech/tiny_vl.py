"""Tiny random models of the vision-language families beyond Llava (llavamech.families), built from the real classes'
configs with no download: a word-level tokenizer over the toy world's words plus the family's own special tokens,
the family's chat template written out here in its real structure, and its real image processor scaled down.

Qwen2-VL / Qwen2.5-VL: patches of 8 pixels merged 2 × 2 (the real ones: 14 and 2), so one image token covers
16 × 16 pixels of the resized image; between 4 and 256 tokens per image (max_pixels = 256 · 16²).
Gemma 3: a 48 px SigLIP tower (6 × 6 patches of 8) pooled 2 × 2 to 3 × 3 image tokens (the real one: 896 px, 64 × 64
patches of 14 pooled 4 × 4 to 16 × 16 = 256 tokens); a sliding-window layer (window 8) then a global one; no logit
soft-cap, as Gemma 3's published configs. Gemma 3 text-only (Gemma3ForCausalLM), the same language model; its
`soft_cap` sets a cap, which that class applies, for the tests of the capped readout.
LLaVA-OneVision: a 32 px SigLIP tower (4 × 4 patches of 8, no CLS) over Qwen2; any-resolution tiles of 32 px in up
to 3 × 3, their unpadded grid pooled (bilinearly, as anyres_max_9 does past 9 tiles' worth) past 2 tiles' worth of
patches (`anyres_max_2`; the real one: 384 px, 27 × 27 patches of 14, anyres_max_9).
Idefics3: a 32 px tower (4 × 4 patches of 8) pixel-shuffled 2 × 2 into 4 tokens per tile; the image resized to at
most 96 px a side, then to multiples of 32, split into 32 px tiles plus the whole image (the real one: 364 px tiles,
26 × 26 patches of 14 shuffled 3 × 3 into 81 tokens, images up to 4 × 364 px a side), over Llama.
SmolVLM: the same, as SmolVLMForConditionalGeneration with its own processor (which needs the num2words package).
InternVL: a 32 px InternViT-like tower (4 × 4 patches of 8, a CLS token left out, q/k/v biases as InternViT-300M's)
pixel-shuffled 2 × 2 into 4 tokens per tile; the image squashed to a grid of up to 4 tiles of 32 px plus a thumbnail
(the real one: 448 px, 32 × 32 patches of 14 shuffled 2 × 2 into 256 tokens, up to 12 tiles), over Qwen2 (q/k/v
biases made non-zero) or Qwen3 (`text="qwen3"`: q/k norms, their gains made other than ones, as InternVL3.5's).
Mistral 3: a Pixtral tower with patches of 8 (2-D rotary positions) whose 2 × 2 blocks the patch merger joins into
one token of 16 × 16 pixels; the image downscaled to fit 64 px a side (its sides then rounded up to multiples of
16), so up to 4 × 4 tokens, each row ended by [IMG_BREAK] and the last by [IMG_END] (the real one: patches of 14,
tokens of 28 px, 1,540 px a side), over Mistral, or over Ministral 3 (`text="ministral3"`: its YaRN rotary angles
and the query scaling of Llama 4, which starts past original_max_position_embeddings, here 256 positions).
GLM-4.1V: Qwen2-VL's patches of 8 merged 2 × 2 (by a strided convolution) into tokens of 16 × 16 pixels, between 4
and 256 tokens per image (max_pixels counted over the 2 frames an image is repeated to), over GLM-4's language model:
sandwich norms with plain gains g (drawn at random), a fused gate_up_proj, q/k/v biases (made non-zero) and rotary
angles on the first half of each head (partial_rotary_factor 0.5, its multimodal sections summing to head_dim / 4).
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3Processor,
                          Gemma3TextConfig, Glm4vConfig, Glm4vForConditionalGeneration, Glm4vProcessor,
                          Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor,
                          InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor,
                          LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor,
                          Mistral3Config, Mistral3ForConditionalGeneration, PreTrainedTokenizerFast,
                          Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2_5_VLProcessor, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor,
                          Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, SmolVLMConfig,
                          SmolVLMForConditionalGeneration, SmolVLMProcessor)
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

from .families import image_only, processor_class
from .organism.build import CLIP_MEAN, CLIP_STD, _random_biases, llama_config, vocabulary

QWEN_SPECIAL = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template (its default system turn left out: the toy vocabulary has no words for it)
QWEN_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                 "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
                 "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ item['text'] }}{% endif %}{% endfor %}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PATCH, MERGE = 8, 2


def chat_tokenizer(special: list[str], words: list[str], template: str, **tokens) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the toy world's words and `words`, with `special` as special tokens (the first is
    <unk>), no BOS prepended (as Qwen's), and the family's chat template."""
    vocab = {t: i for i, t in enumerate(dict.fromkeys(special + vocabulary(multi=True) + words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special[0]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.add_special_tokens(special)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=special[0], padding_side="left", **tokens)
    fast.chat_template = template
    return fast


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    return chat_tokenizer(QWEN_SPECIAL, ["user", "assistant"], QWEN_TEMPLATE, eos_token="<|im_end|>",
                          pad_token="<|endoftext|>",
                          extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                                "vision_bos_token": "<|vision_start|>",
                                                "vision_eos_token": "<|vision_end|>"})


def tiny_qwen_vl(seed: int = 0, version: str = "2", hidden: int = 64, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, mlp: int = 128):
    """A tiny random Qwen2VLForConditionalGeneration (`version` "2"), Qwen2_5_VLForConditionalGeneration ("2.5") or
    Qwen3VLForConditionalGeneration ("3": q/k norms, and the vision tower's features of its blocks 0 and 1 added to
    the residual stream at the image positions after the language model's layers 0 and 1, "deepstack"), its
    tokenizer and processor. q/k/v biases made non-zero (2, 2.5); multimodal RoPE sections summing to head_dim / 2."""
    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    head_dim = hidden // heads
    third = head_dim // 2 // 3
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [head_dim // 2 - 2 * third, third, third]})
    vision = dict(depth=2, hidden_size=hidden, num_heads=4, patch_size=PATCH, spatial_merge_size=MERGE,
                  temporal_patch_size=2)
    if version == "2":
        vision.update(embed_dim=32, mlp_ratio=2)
        cls, config_cls, processor_cls = Qwen2VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLProcessor
    elif version == "3":
        vision.update(hidden_size=32, intermediate_size=64, out_hidden_size=hidden, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        text.update(head_dim=head_dim)
        cls, config_cls, processor_cls = Qwen3VLForConditionalGeneration, Qwen3VLConfig, Qwen3VLProcessor
    else:   # 2.5: windowed attention in the vision tower (windows of 2 × 2 tokens) but for its last block
        vision.update(hidden_size=32, intermediate_size=64, out_hidden_size=hidden, window_size=4 * PATCH * MERGE // 2,
                      fullatt_block_indexes=[1])
        cls, config_cls, processor_cls = (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, Qwen2_5_VLProcessor)
    config = config_cls(vision_config=vision, text_config=text, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
                        attn_implementation="eager")
    torch.manual_seed(seed)
    model = cls(config)
    _random_biases(model)
    if version == "3":
        _random_gains(model)   # its q/k norms' gains are ones: made other than that
    images = Qwen2VLImageProcessorPil(min_pixels=4 * (PATCH * MERGE) ** 2, max_pixels=256 * (PATCH * MERGE) ** 2,
                                      patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2,
                                      image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return model.eval(), tok, image_only(processor_cls)(images, tok, chat_template=QWEN_TEMPLATE)


GEMMA_SPECIAL = ["<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                 "<end_of_image>", "<image_soft_token>"]
# Gemma 3's chat template (its system-turn handling left out: llavamech asks in one user turn)
GEMMA_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<start_of_turn>"
                  "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
                  "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
                  "{% else %}{{ item['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
                  "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def gemma_tokenizer() -> PreTrainedTokenizerFast:
    return chat_tokenizer(GEMMA_SPECIAL, ["user", "model"], GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>",
                          pad_token="<pad>",
                          extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                "image_token": "<image_soft_token>"})


def _gemma_text(tok, soft_cap: float | None, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                mlp: int = 128) -> dict:
    ids = {t: tok.convert_tokens_to_ids(t) for t in GEMMA_SPECIAL}
    return dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
                query_pre_attn_scalar=hidden // heads, sliding_window=8, sliding_window_pattern=2, rms_norm_eps=1e-6,
                max_position_embeddings=512, final_logit_softcapping=soft_cap, bos_token_id=ids["<bos>"],
                eos_token_id=ids["<eos>"], pad_token_id=ids["<pad>"])


def _random_gains(model: torch.nn.Module) -> None:
    """The language model's RMSNorm gains (q/k norms included) and Gemma's projector start as constants (Gemma's g
    of 1 + g at zero): drawn at random instead, so that the identities see them."""
    for name, param in model.named_parameters():
        language = "language_model" in name or name.startswith(("model.layers", "model.norm"))
        if "multi_modal_projector" in name or language and name.endswith("norm.weight"):
            torch.nn.init.normal_(param, std=0.5)


def tiny_gemma3_text(seed: int = 0, soft_cap: float | None = None, **sizes):
    """A tiny random Gemma3ForCausalLM (Gemma 3's text-only class, which applies the logit soft-cap) and its
    tokenizer."""
    tok = gemma_tokenizer()
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**_gemma_text(tok, soft_cap, **sizes), attn_implementation="eager"))
    _random_gains(model)
    return model.eval(), tok


def tiny_gemma3(seed: int = 0, **sizes):
    """A tiny random Gemma3ForConditionalGeneration, its tokenizer and processor."""
    tok = gemma_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in GEMMA_SPECIAL}
    vision = dict(image_size=48, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4)
    config = Gemma3Config(text_config=_gemma_text(tok, None, **sizes), vision_config=vision, mm_tokens_per_image=9,
                          boi_token_id=ids["<start_of_image>"], eoi_token_id=ids["<end_of_image>"],
                          image_token_id=ids["<image_soft_token>"], attn_implementation="eager")
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    _random_gains(model)
    images = Gemma3ImageProcessorPil(size={"height": 48, "width": 48}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                     do_pan_and_scan=False)
    return model.eval(), tok, Gemma3Processor(images, tok, chat_template=GEMMA_TEMPLATE, image_seq_length=9)


ONEVISION_SPECIAL = QWEN_SPECIAL + ["<image>", "<video>"]
# llava-onevision-qwen2's chat template (Qwen's; its default system turn left out, as for Qwen2-VL)
ONEVISION_TEMPLATE = QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")
ONEVISION_TILE, ONEVISION_PATCH, ONEVISION_MAX = 32, 8, "anyres_max_2"


def tiny_llava_onevision(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                         mlp: int = 128):
    """A tiny random LlavaOnevisionForConditionalGeneration over Qwen2 (q/k/v biases made non-zero), its tokenizer
    and processor."""

    tok = chat_tokenizer(ONEVISION_SPECIAL, ["user", "assistant"], ONEVISION_TEMPLATE, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", extra_special_tokens={"image_token": "<image>",
                                                                          "video_token": "<video>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in ONEVISION_SPECIAL}
    text = llama_config(len(tok), hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, mlp=mlp, eps=1e-6,
                        family="qwen2")
    text.bos_token_id, text.eos_token_id, text.pad_token_id = None, ids["<|im_end|>"], ids["<|endoftext|>"]
    s = ONEVISION_TILE
    pinpoints = [[a * s, b * s] for a in (1, 2, 3) for b in (1, 2, 3)]
    vision = dict(model_type="siglip_vision_model", image_size=s, patch_size=ONEVISION_PATCH, hidden_size=32,
                  intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vision_use_head=False)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                                  video_token_index=ids["<video>"], image_grid_pinpoints=pinpoints,
                                  vision_aspect_ratio=ONEVISION_MAX, attn_implementation="eager")
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    _random_biases(model)
    images = LlavaOnevisionImageProcessorPil(size={"height": s, "width": s}, image_grid_pinpoints=pinpoints,
                                             image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = image_only(LlavaOnevisionProcessor)(images, tok, chat_template=ONEVISION_TEMPLATE,
                                                    num_image_tokens=(s // ONEVISION_PATCH) ** 2,
                                                    vision_feature_select_strategy="full",
                                                    vision_aspect_ratio=ONEVISION_MAX)
    return model.eval(), tok, processor


IDEFICS_TILE_TAGS = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
IDEFICS_SPECIAL = ["<unk>", "<|begin_of_text|>", "<end_of_utterance>", "<pad>", "<fake_token_around_image>",
                   "<image>", "<global-img>"] + IDEFICS_TILE_TAGS
# Idefics3's chat template ("User:<image>question<end_of_utterance>\nAssistant:")
IDEFICS_TEMPLATE = ("<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
                    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
                    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
                    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
                    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def tiny_idefics3(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, mlp: int = 128,
                  smol: bool = False):
    """A tiny random Idefics3ForConditionalGeneration over Llama, its tokenizer and processor; with `smol`, a
    SmolVLMForConditionalGeneration (Idefics3's architecture and layout, its chat turns opened by <|im_start|>)."""
    special, template = (SMOLVLM_SPECIAL, SMOLVLM_TEMPLATE) if smol else (IDEFICS_SPECIAL, IDEFICS_TEMPLATE)
    bos = special[1]
    tok = chat_tokenizer(special, ["User", "Assistant"], template, bos_token=bos, eos_token="<end_of_utterance>",
                         pad_token="<pad>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    text = llama_config(len(tok), hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, mlp=mlp)
    text.bos_token_id, text.eos_token_id, text.pad_token_id = ids[bos], ids["<end_of_utterance>"], ids["<pad>"]
    vision = dict(hidden_size=32, image_size=32, patch_size=8, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4)
    config_cls, model_cls, images_cls, processor_cls = (
        (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil, SmolVLMProcessor) if smol else
        (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor))
    config = config_cls(vision_config=vision, text_config=text, image_token_id=ids["<image>"], scale_factor=2,
                        attn_implementation="eager")
    torch.manual_seed(seed)
    model = model_cls(config)
    images = images_cls(size={"longest_edge": 96}, max_image_size={"longest_edge": 32}, do_image_splitting=True,
                        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return model.eval(), tok, image_only(processor_cls)(images, tok, image_seq_len=4, chat_template=template)


SMOLVLM_SPECIAL = ["<unk>", "<|im_start|>"] + IDEFICS_SPECIAL[2:]
# SmolVLM's chat template: Idefics3's, opened by <|im_start|> instead of <|begin_of_text|>
SMOLVLM_TEMPLATE = IDEFICS_TEMPLATE.replace("<|begin_of_text|>", "<|im_start|>", 1)


def tiny_smolvlm(seed: int = 0, **sizes):
    """A tiny random SmolVLMForConditionalGeneration over Llama (as `tiny_idefics3`), its tokenizer and processor."""
    return tiny_idefics3(seed, smol=True, **sizes)


INTERNVL_SPECIAL = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                    "<video>"]
# InternVL's chat template as transformers' conversion writes it (Qwen's turns; an image is <IMG_CONTEXT> and a line)
INTERNVL_TEMPLATE = QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n")
INTERNVL_TILE, INTERNVL_PATCH, INTERNVL_TILES = 32, 8, 4
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]   # InternVL's normalisation


def tiny_internvl(seed: int = 0, text: str = "qwen2", hidden: int = 64, layers: int = 2, heads: int = 4,
                  kv_heads: int = 2, mlp: int = 128):
    """A tiny random InternVLForConditionalGeneration over Qwen2 (q/k/v biases made non-zero) or Qwen3 (`text`:
    q/k norms, its norms' gains and the projector drawn at random by `_random_gains`), its tokenizer and processor."""
    tok = chat_tokenizer(INTERNVL_SPECIAL, ["user", "assistant"], INTERNVL_TEMPLATE, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>",
                         extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                                               "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in INTERNVL_SPECIAL}
    language = llama_config(len(tok), hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, mlp=mlp,
                            eps=1e-6, family="qwen2").to_dict()
    language.update(model_type=text, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                    pad_token_id=ids["<|endoftext|>"], **({"head_dim": hidden // heads} if text == "qwen3" else {}))
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=INTERNVL_TILE, patch_size=INTERNVL_PATCH, attention_bias=True)
    tokens = (INTERNVL_TILE // INTERNVL_PATCH // 2) ** 2
    config = InternVLConfig(vision_config=vision, text_config=language, image_token_id=ids["<IMG_CONTEXT>"],
                            image_seq_length=tokens, downsample_ratio=0.5, tie_word_embeddings=False,
                            attn_implementation="eager")
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    _random_biases(model)
    if text == "qwen3":
        _random_gains(model)
    images = GotOcr2ImageProcessorPil(size={"height": INTERNVL_TILE, "width": INTERNVL_TILE}, crop_to_patches=True,
                                      min_patches=1, max_patches=INTERNVL_TILES, image_mean=IMAGENET_MEAN,
                                      image_std=IMAGENET_STD)
    processor = image_only(InternVLProcessor)(images, tok, chat_template=INTERNVL_TEMPLATE, image_seq_length=tokens)
    return model.eval(), tok, processor


MISTRAL_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]
# Mistral Small 3.1's chat template (its default system prompt left out: the toy vocabulary has no words for it): a
# user turn in [INST] ... [/INST], an image as [IMG], the answer right after [/INST]
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST]"
                    "{% for item in message['content'] %}{% if item['type'] == 'image' %}[IMG]"
                    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}[/INST]"
                    "{% else %}{{ message['content'][0]['text'] }}{{ eos_token }}{% endif %}{% endfor %}")
MISTRAL_PATCH, MISTRAL_MERGE, MISTRAL_EDGE = 8, 2, 64


def tiny_mistral3(seed: int = 0, text: str = "mistral", hidden: int = 64, layers: int = 2, heads: int = 4,
                  kv_heads: int = 2, mlp: int = 128):
    """A tiny random Mistral3ForConditionalGeneration over Mistral or Ministral 3 (`text`), its tokenizer and Pixtral
    processor; the projector's norm gains drawn at random by `_random_gains`, as the language model's."""
    tok = chat_tokenizer(MISTRAL_SPECIAL, ["user", "assistant"], MISTRAL_TEMPLATE, bos_token="<s>", eos_token="</s>",
                         pad_token="<pad>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in MISTRAL_SPECIAL}
    language = llama_config(len(tok), hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, mlp=mlp,
                            family="mistral").to_dict()
    language.update(model_type=text, head_dim=hidden // heads, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                    pad_token_id=ids["<pad>"])
    if text == "ministral3":
        language["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 2.0,
                                       "original_max_position_embeddings": 256, "beta_fast": 32.0, "beta_slow": 1.0,
                                       "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=MISTRAL_EDGE, patch_size=MISTRAL_PATCH)
    config = Mistral3Config(vision_config=vision, text_config=language, image_token_index=ids["[IMG]"],
                            spatial_merge_size=MISTRAL_MERGE, tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(seed)
    model = Mistral3ForConditionalGeneration(config)
    _random_gains(model)
    images = PixtralImageProcessorPil(size={"longest_edge": MISTRAL_EDGE},
                                      patch_size={"height": MISTRAL_PATCH, "width": MISTRAL_PATCH},
                                      image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor = processor_class("PixtralProcessor")(images, tok, patch_size=MISTRAL_PATCH,
                                                    spatial_merge_size=MISTRAL_MERGE, chat_template=MISTRAL_TEMPLATE)
    return model.eval(), tok, processor


GLM_SPECIAL = ["<unk>", "<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
               "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>",
               "<|video|>"]
# GLM-4.1V's chat template (one user turn; its system turn and its thinking's handling left out): [gMASK]<sop>, the
# turn opened by <|user|> and a new line, an image as <|begin_of_image|><|image|><|end_of_image|>, the answer on a
# new line after <|assistant|>
GLM_TEMPLATE = ("[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n"
                "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
                "<|begin_of_image|><|image|><|end_of_image|>{% else %}{{ item['text'] }}{% endif %}{% endfor %}"
                "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def tiny_glm4v(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, mlp: int = 128):
    """A tiny random Glm4vForConditionalGeneration (GLM-4.1V), its tokenizer and processor;
    the language model's norm gains drawn at random and its q/k/v biases made non-zero."""
    tok = chat_tokenizer(GLM_SPECIAL, ["user", "assistant"], GLM_TEMPLATE, eos_token="<|user|>",
                         pad_token="<|endoftext|>",
                         extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in GLM_SPECIAL}
    quarter = hidden // heads // 4      # rotary angles on half of each head: head_dim / 4 frequencies
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                rms_norm_eps=1e-5, eos_token_id=ids["<|user|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                 "mrope_section": [quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]})
    vision = dict(depth=2, hidden_size=32, num_heads=4, intermediate_size=64, out_hidden_size=hidden, image_size=32,
                  patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=2)
    config = Glm4vConfig(vision_config=vision, text_config=text, image_token_id=ids["<|image|>"],
                         video_token_id=ids["<|video|>"], image_start_token_id=ids["<|begin_of_image|>"],
                         image_end_token_id=ids["<|end_of_image|>"], video_start_token_id=ids["<|begin_of_video|>"],
                         video_end_token_id=ids["<|end_of_video|>"], tie_word_embeddings=False,
                         attn_implementation="eager")
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(config)
    _random_biases(model)
    _random_gains(model)
    images = Glm4vImageProcessorPil(size={"shortest_edge": 4 * (PATCH * MERGE) ** 2,
                                          "longest_edge": 2 * 256 * (PATCH * MERGE) ** 2},
                                    patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2,
                                    image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return model.eval(), tok, image_only(Glm4vProcessor)(images, tok, chat_template=GLM_TEMPLATE)
