"""Where things live inside a Llama-family language model (alone, or inside a Llava, Qwen-VL, Gemma 3 or GLM-4.1V),
read from the modules and the config: no hard-coded sizes. Grouped-query attention aware.

Gemma's decoder layer has sandwich norms: its attention output and its FFN output each pass an RMSNorm of their own
before they join the residual stream (`attn_out_norm`, `ffn_out_norm`), its FFN input passes `pre_feedforward_layernorm`
(where Llama's is called post_attention_layernorm), every norm scales by 1 + g (`gain`), its queries and keys pass
norms of their own (applied where the trace recomputes attention weights), and its logits may be soft-capped
(`soft_cap`).

GLM-4's decoder layer (GLM-4.1V) has the same sandwich under other names: post_self_attn_layernorm on the attention
output, post_attention_layernorm at the FFN input (Llama's name and place), post_mlp_layernorm on the FFN output,
each scaling by g. Its FFN fuses gate and up into one gate_up_proj; its neurons are down_proj's inputs all the same,
which is all the decomposition reads of it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import families


@dataclass
class Anatomy:
    language_model: nn.Module    # the decoder stack (inside a Llava, what the merged input embeddings go into)
    layers: nn.ModuleList        # decoder layers
    final_norm: nn.Module        # RMSNorm before lm_head
    embed: nn.Embedding          # E: input embeddings [vocab, d]
    lm_head: nn.Linear           # W_U: [vocab, d]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    eps: float                   # RMSNorm eps, from the config (llava-1.5 says 1e-5; the paper's code used 1e-6)
    image_token_id: int | None   # None for a text-only model
    projector: nn.Module | None = None   # what outputs the visual embeddings (Llava's projector, Qwen-VL's merger,
    #                                     Idefics3's connector)
    gain_offset: float = 0.0     # an RMSNorm scales by gain_offset + g: 1 for Gemma, 0 for Llama
    soft_cap: float | None = None   # the config's final logit soft-cap c: logits = c tanh(z / c), where applied
    _unembed: tuple = field(default=(None,), repr=False, compare=False)   # (W_U, its version, W_U in float32)

    @classmethod
    def of(cls, model: nn.Module) -> "Anatomy":
        config = model.config
        text_config = getattr(config, "text_config", config)
        lm = next((getattr(model.model, name) for name in ("language_model", "text_model")   # Idefics3: text_model
                   if hasattr(model.model, name)), model.model)
        attn = lm.layers[0].self_attn
        n_heads = text_config.num_attention_heads
        head_dim = getattr(attn, "head_dim", None) or text_config.hidden_size // n_heads
        family = families.of(model)
        projector = getattr(model.model, "multi_modal_projector", None) or getattr(model.model, "connector", None)
        if projector is None and hasattr(model.model, "visual"):
            projector = model.model.visual.merger     # Qwen-VL: 2 x 2 patches merged and projected, [tokens, d]
        return cls(language_model=lm, layers=lm.layers, final_norm=lm.norm, embed=lm.embed_tokens, lm_head=model.lm_head,
                   n_heads=n_heads, n_kv_heads=getattr(text_config, "num_key_value_heads", None) or n_heads,
                   head_dim=head_dim, d_model=text_config.hidden_size, eps=text_config.rms_norm_eps,
                   image_token_id=getattr(config, "image_token_id", None), projector=projector,
                   gain_offset=family.norm_gain_offset if family else 0.0,
                   soft_cap=getattr(text_config, "final_logit_softcapping", None))

    @property
    def norm_names(self) -> tuple[str, str | None, str | None]:
        """The decoder layer's norms: (at the FFN input, on the attention output, on the FFN output), None where the
        output joins the residual stream as it is."""
        block = self.layers[0]
        if hasattr(block, "pre_feedforward_layernorm"):    # Gemma
            return "pre_feedforward_layernorm", "post_attention_layernorm", "post_feedforward_layernorm"
        if hasattr(block, "post_mlp_layernorm"):           # GLM-4
            return "post_attention_layernorm", "post_self_attn_layernorm", "post_mlp_layernorm"
        return "post_attention_layernorm", None, None

    @property
    def sandwich(self) -> bool:
        """Whether attention and FFN outputs are normed before they join the residual stream (Gemma, GLM-4)."""
        return self.norm_names[1] is not None

    def pre_ffn_norm(self, layer: int) -> nn.Module:
        """The norm at the FFN's input (its input is m^l = h^{l-1} + A^l)."""
        return getattr(self.layers[layer], self.norm_names[0])

    def attn_out_norm(self, layer: int) -> nn.Module | None:
        """The norm between the attention output and the residual stream (Gemma, GLM-4), else None."""
        name = self.norm_names[1]
        return getattr(self.layers[layer], name) if name else None

    def ffn_out_norm(self, layer: int) -> nn.Module | None:
        """The norm between the FFN output and the residual stream (Gemma, GLM-4), else None."""
        name = self.norm_names[2]
        return getattr(self.layers[layer], name) if name else None

    def gain(self, norm: nn.Module) -> torch.Tensor:
        """An RMSNorm's effective gain in float32 on the readout device: g, or 1 + g for Gemma."""
        g = self.weight(norm.weight)
        return g + self.gain_offset if self.gain_offset else g

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_neurons(self) -> int:
        return self.layers[0].mlp.down_proj.in_features

    def kv_head(self, head: int) -> int:
        """The key/value head that query head `head` reads under grouped-query attention."""
        return head // (self.n_heads // self.n_kv_heads)

    @property
    def readout_device(self) -> torch.device:
        """Where readouts are computed: the unembedding's device (the last one when a model spans several GPUs)."""
        return self.lm_head.weight.device

    def weight(self, param: torch.Tensor) -> torch.Tensor:
        """A weight as readouts use it: float32, on the readout device (whatever the model's dtype and device map)."""
        return param.detach().to(self.readout_device, torch.float32)

    def unembed(self) -> torch.Tensor:
        """W_U as readouts use it (`weight`), converted once while the weight stays the same tensor, unmodified: each
        conversion of llava-1.5-7b's bfloat16 W_U is a 525 MB copy. A float32 model's W_U is not copied at all, and a
        bfloat16 one on a recent GPU is read as it is (llavamech.attribution.readout)."""
        w = self.lm_head.weight
        version = (w._version, w.dtype, w.device)   # moved, cast or modified in place: converted again
        if self._unembed[0] is not w or self._unembed[1] != version:
            self._unembed = (w, version, self.weight(w))
        return self._unembed[2]

    def o_heads(self, layer: int) -> torch.Tensor:
        """W_O per head as a view of the weight, in the model's dtype on its layer's device (no copy): [heads, head_dim,
        d], so that a head's output is v_weighted @ W_O[h] (llavamech.attribution.through_o multiplies in float32)."""
        w = self.layers[layer].self_attn.o_proj.weight.detach()  # [d, heads * head_dim]
        return w.view(self.d_model, self.n_heads, self.head_dim).permute(1, 2, 0)

    def rms(self, x: torch.Tensor) -> torch.Tensor:
        """RMS over the last dimension with the model's eps, as its RMSNorm computes it: [..., 1]."""
        return torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
