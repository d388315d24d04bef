"""What a model and a trace need in memory, computed from a config (no weights, no GPU): the appendix's table.

Weights: the parameters of the model built on PyTorch's meta device (exact, nothing allocated) times the dtype's
size. The trace (llavamech.trace) keeps its readouts in float32 whatever the model's dtype: at the scored position
L·(4d + H·S + I) + d + V numbers, plus the values at every position L·S·H_kv·d_head; `all_positions` adds the layer
inputs, attention and FFN outputs at every position, (3L + 1)·S·d. The forward pass itself holds, per layer, eager
attention's probabilities H·S² in the model's dtype (the largest transient at S ≈ 600).
"""
from __future__ import annotations

import pandas as pd
import torch
import transformers

from .errors import LlavamechError

DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9


def llava_15_7b_config() -> transformers.LlavaConfig:
    """llava-hf/llava-1.5-7b-hf's config, as published (CLIP ViT-L/14 at 336 px + Vicuna-7B v1.5)."""
    vision = transformers.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                           num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
    text = transformers.LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                    num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5,
                                    max_position_embeddings=4096)
    return transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000,
                                    projector_hidden_act="gelu", vision_feature_layer=-2,
                                    vision_feature_select_strategy="default", image_seq_length=576)


def _qwen_vl_text(max_positions: int) -> dict:
    """The language model of Qwen2-VL-7B and Qwen2.5-VL-7B (Qwen2-7B's shape: 28 heads over 4 key/value heads)."""
    return dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6, max_position_embeddings=max_positions,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})


QWEN_VL_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                      vision_end_token_id=151653, tie_word_embeddings=False)


def qwen2_vl_7b_config() -> transformers.Qwen2VLConfig:
    """Qwen/Qwen2-VL-7B-Instruct's config, as published (a 675M-parameter ViT, patches of 14 merged 2 x 2)."""
    vision = dict(depth=32, embed_dim=1280, mlp_ratio=4, num_heads=16, hidden_size=3584, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    return transformers.Qwen2VLConfig(vision_config=vision, text_config=_qwen_vl_text(32768), **QWEN_VL_TOKENS)


def qwen2_5_vl_7b_config() -> transformers.Qwen2_5_VLConfig:
    """Qwen/Qwen2.5-VL-7B-Instruct's config, as published (its ViT with windowed attention, full in 4 blocks)."""
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", tokens_per_second=2)
    return transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=_qwen_vl_text(128000), **QWEN_VL_TOKENS)


def qwen3_vl_8b_config() -> transformers.Qwen3VLConfig:
    """Qwen/Qwen3-VL-8B-Instruct's config, as published (a ViT with patches of 16 merged 2 x 2, whose blocks 8, 16 and
    24 also feed the first three decoder layers, + a 36-layer Qwen3 with q/k norms)."""
    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[8, 16, 24], hidden_act="gelu_pytorch_tanh")
    text = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                max_position_embeddings=262144,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True})
    return transformers.Qwen3VLConfig(vision_config=vision, text_config=text, **QWEN_VL_TOKENS)


def gemma3_4b_config() -> transformers.Gemma3Config:
    """google/gemma-3-4b-it's config, as published (SigLIP-So400m at 896 px pooled to 256 tokens + a 34-layer Gemma 3
    with 8 query heads over 4 key/value heads of 256, five sliding-window layers to each global one)."""
    vision = dict(hidden_size=1152, image_size=896, intermediate_size=4304, num_attention_heads=16,
                  num_hidden_layers=27, patch_size=14, vision_use_head=False)
    text = dict(vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                sliding_window=1024, rms_norm_eps=1e-6, max_position_embeddings=131072,
                rope_scaling={"factor": 8.0, "rope_type": "linear"}, rope_theta=1000000.0,
                rope_local_base_freq=10000.0)
    return transformers.Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=256,
                                     boi_token_index=255999, eoi_token_index=256000, image_token_index=262144)


def llava_onevision_7b_config() -> transformers.LlavaOnevisionConfig:
    """llava-hf/llava-onevision-qwen2-7b-ov-hf's config, as published (SigLIP-So400m at 384 px, its last layer left
    out, + Qwen2-7B; tiles of 384 px in up to 6 × 6, pooled past 9 tiles' worth)."""
    vision = dict(model_type="siglip_vision_model", hidden_size=1152, image_size=384, intermediate_size=4304,
                  num_attention_heads=16, num_hidden_layers=26, patch_size=14, vision_use_head=False)
    text = dict(model_type="qwen2", vocab_size=152128, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6, max_position_embeddings=32768,
                rope_theta=1000000.0, tie_word_embeddings=False)
    pinpoints = [[384 * a, 384 * b] for a in range(1, 7) for b in range(1, 7)]
    return transformers.LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=151646,
                                             video_token_index=151647, image_grid_pinpoints=pinpoints,
                                             vision_aspect_ratio="anyres_max_9", vision_feature_layer=-1,
                                             vision_feature_select_strategy="full")


def idefics3_8b_config() -> transformers.Idefics3Config:
    """HuggingFaceM4/Idefics3-8B-Llama3's config, as published (SigLIP-So400m at 364 px, 26 × 26 patches shuffled
    3 × 3 into 81 tokens a tile, + Llama 3 8B)."""
    vision = dict(hidden_size=1152, image_size=364, intermediate_size=4304, num_hidden_layers=27,
                  num_attention_heads=16, patch_size=14)
    text = dict(model_type="llama", vocab_size=128259, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, max_position_embeddings=131072,
                rope_theta=500000.0, tie_word_embeddings=False)
    return transformers.Idefics3Config(vision_config=vision, text_config=text, scale_factor=3, image_token_id=128257)


def internvl3_8b_config() -> transformers.InternVLConfig:
    """OpenGVLab/InternVL3-8B-hf's config, as published (InternViT-300M at 448 px, 32 × 32 patches pixel-shuffled
    2 × 2 into 256 tokens a tile, + Qwen2.5-7B; its vocabulary of 151,674 holds InternVL's added tokens). Written
    from the original checkpoint's config and transformers' conversion, not read off the -hf files (none offline)."""
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=448, patch_size=14, attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
                  layer_scale_init_value=0.1, use_mean_pooling=True)
    text = dict(model_type="qwen2", vocab_size=151674, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6, max_position_embeddings=32768,
                rope_theta=1000000.0, tie_word_embeddings=False)
    return transformers.InternVLConfig(vision_config=vision, text_config=text, image_token_id=151667,
                                       image_seq_length=256, downsample_ratio=0.5, tie_word_embeddings=False)


def mistral_small_31_config() -> transformers.Mistral3Config:
    """mistralai/Mistral-Small-3.1-24B-Instruct-2503's config, as its model card's config.json gives it (a Pixtral tower
    of 24 layers at up to 1,540 px, patches of 14 merged 2 × 2 into tokens of 28 px, + a 40-layer Mistral with 32
    query heads over 8 key/value heads of 128; no tied embeddings). Written from the published numbers, not read off
    the checkpoint's files (none offline)."""
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=1540, patch_size=14, hidden_act="silu")
    text = dict(model_type="mistral", vocab_size=131072, hidden_size=5120, intermediate_size=32768, head_dim=128,
                num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
                max_position_embeddings=131072, sliding_window=None, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000000.0})
    return transformers.Mistral3Config(vision_config=vision, text_config=text, image_token_index=10,
                                       spatial_merge_size=2, projector_hidden_act="gelu", vision_feature_layer=-1,
                                       multimodal_projector_bias=False, tie_word_embeddings=False)


def glm41v_9b_config() -> transformers.Glm4vConfig:
    """zai-org/GLM-4.1V-9B-Thinking's config, as its model card's config.json gives it (a 24-layer ViT of 1,536 with
    patches of 14 merged 2 × 2 by a strided convolution, + GLM-4-9B's language model: 40 layers, 32 query heads over
    2 key/value heads of 128, rotary angles on half of each head, sandwich norms, no tied embeddings). Written from the
    published numbers, not read off the checkpoint's files (none offline): unverified here are max_position_embeddings
    (65,536) and the vision tower's image_size (336, which sizes only its position embeddings), both of which
    transformers' own defaults for this checkpoint also give."""
    vision = dict(depth=24, hidden_size=1536, intermediate_size=13696, num_heads=12, out_hidden_size=4096,
                  image_size=336, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, rms_norm_eps=1e-5,
                  hidden_act="silu")
    text = dict(vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_hidden_layers=40,
                num_attention_heads=32, num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=65536,
                pad_token_id=151329, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                      "partial_rotary_factor": 0.5, "mrope_section": [8, 12, 12]})
    return transformers.Glm4vConfig(vision_config=vision, text_config=text, image_token_id=151343,
                                    video_token_id=151344, image_start_token_id=151339, image_end_token_id=151340,
                                    video_start_token_id=151341, video_end_token_id=151342, tie_word_embeddings=False)


def parameters(config) -> int:
    """The number of parameters of the model a config describes, counted on the meta device."""
    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(config) if hasattr(config, "vision_config") \
            else transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def trace_numbers(text_config, seq_len: int, all_positions: bool = False) -> int:
    """How many float32 numbers a trace of one example keeps."""
    L, d, H = text_config.num_hidden_layers, text_config.hidden_size, text_config.num_attention_heads
    kv = getattr(text_config, "num_key_value_heads", None) or H
    hd = getattr(text_config, "head_dim", None) or d // H
    n = L * (4 * d + H * seq_len + text_config.intermediate_size) + d + text_config.vocab_size + L * seq_len * kv * hd
    return n + ((3 * L + 1) * seq_len * d if all_positions else 0)


def memory_table(config=None, seq_len: int = 600) -> pd.DataFrame:
    """GB per dtype: weights, the trace (float32 readouts) at the scored position and at all positions, eager
    attention's largest transient, and their sum (a lower bound of what one GPU needs for `explain`)."""
    config = config or llava_15_7b_config()
    text = getattr(config, "text_config", config)
    n = parameters(config)
    rows = []
    for dtype, size in DTYPES.items():
        weights = n * size / GB
        last, full = trace_numbers(text, seq_len) * 4 / GB, trace_numbers(text, seq_len, True) * 4 / GB
        attention = text.num_attention_heads * seq_len ** 2 * size / GB
        rows.append({"dtype": dtype, "parameters (B)": n / 1e9, "weights": weights, "trace": last,
                     "trace, all positions": full, "attention probabilities (one layer)": attention,
                     "explain needs at least": weights + last + attention})
    return pd.DataFrame(rows).set_index("dtype")


def explain_needs(config, dtype: str = "float32", seq_len: int = 600) -> float:
    """GB that `explain` needs at least on one device for a model of this config in `dtype` (the table's sum)."""
    return float(memory_table(config, seq_len).loc[dtype, "explain needs at least"])


def check_fits(config, dtype: str, free_bytes: int, where: str = "the GPU", seq_len: int = 600) -> None:
    """One clear error, before anything is loaded, when a model of this config in `dtype` cannot run `explain` in
    `free_bytes` (e.g. torch.cuda.mem_get_info()[0]): the memory needed, the memory free, and the way out."""
    need, free = explain_needs(config, dtype, seq_len), free_bytes / GB
    if need <= free:
        return
    way = ("--dtype bfloat16 (half the weights) or --device-map auto (spread over the GPUs and the CPU)"
           if dtype == "float32" else "--device-map auto (spread over the GPUs and the CPU)")
    raise LlavamechError(f"the model needs at least {need:.1f} GB in {dtype} for explain but {where} has "
                         f"{free:.1f} GB free; use {way}")
