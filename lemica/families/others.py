"""Families lemica runs with the generic signals (no family-specific knowledge yet), named so that results and
errors can say which family a model is: CogVideoX, LTX-Video, Qwen-Image, Latte."""
from lemica.families.base import FamilyAdapter, register

COGVIDEOX = register(FamilyAdapter("cogvideox", transformers=("diffusers:CogVideoXTransformer3DModel",)))
LTX = register(FamilyAdapter("ltx", transformers=("diffusers:LTXVideoTransformer3DModel",)))
QWEN = register(FamilyAdapter("qwen", transformers=("diffusers:QwenImageTransformer2DModel",)))
LATTE = register(FamilyAdapter("latte", transformers=("diffusers:LatteTransformer3DModel",)))
