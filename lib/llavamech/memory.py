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
    """GB per dtype: weights, the trace (float32 readouts) lean and at all positions, eager attention's largest
    transient, and their sum (a lower bound of what one GPU needs for `explain`)."""
    config = config or llava_15_7b_config()
    text = getattr(config, "text_config", config)
    n = parameters(config)
    rows = []
    for dtype, size in DTYPES.items():
        weights = n * size / GB
        lean, full = trace_numbers(text, seq_len) * 4 / GB, trace_numbers(text, seq_len, True) * 4 / GB
        attention = text.num_attention_heads * seq_len ** 2 * size / GB
        rows.append({"dtype": dtype, "parameters (B)": n / 1e9, "weights": weights, "trace": lean,
                     "trace, all positions": full, "attention probabilities (one layer)": attention,
                     "explain needs at least": weights + lean + attention})
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
