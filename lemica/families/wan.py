"""Wan 2.x (diffusers ``transformer_wan.py`` and its VACE / Animate variants), and lemica's embedded TinyT2V model,
which is a ``WanTransformer3DModel`` in a pipeline of its own."""
from __future__ import annotations

from lemica.families.base import FamilyAdapter, register


def _cache_dit_adapter(pipe):
    """cache-dit's Wan block adapter for a Wan transformer in a pipeline cache-dit does not know (the embedded
    model): one block list, forward pattern 2, separate CFG calls."""
    import cache_dit

    return cache_dit.BlockAdapter(pipe=pipe, transformer=pipe.transformer, blocks=pipe.transformer.blocks,
                                  forward_pattern=cache_dit.ForwardPattern.Pattern_2, check_forward_pattern=True,
                                  has_separate_cfg=True)


ADAPTER = register(FamilyAdapter(
    "wan",
    transformers=("diffusers:WanTransformer3DModel", "diffusers:WanVACETransformer3DModel",
                  "diffusers:WanAnimateTransformer3DModel", "diffusers:WanAnimate2Transformer3DModel"),
    teacache_signal="wan",
    cache_dit_pipelines=("diffusers:WanPipeline", "diffusers:WanImageToVideoPipeline",
                         "diffusers:WanVideoToVideoPipeline", "diffusers:WanVACEPipeline",
                         "diffusers:WanAnimatePipeline"),
    cache_dit_adapter=_cache_dit_adapter,
    # WanTransformerBlock (diffusers models/transformers/transformer_wan.py): self-attention, cross-attention and
    # feed-forward, each output gated / added by the block itself.
    feature_modules=("attn1", "attn2", "ffn"),
))
