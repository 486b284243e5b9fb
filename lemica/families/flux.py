"""FLUX (diffusers ``transformer_flux.py``): TeaCache's official signal is the first block's norm1 output
(ali-vilab/TeaCache ``TeaCache4FLUX/teacache_flux.py:105-109``)."""
from lemica.families.base import FamilyAdapter, register

ADAPTER = register(FamilyAdapter("flux", transformers=("diffusers:FluxTransformer2DModel",), teacache_signal="norm1"))
