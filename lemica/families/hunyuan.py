"""HunyuanVideo (diffusers ``transformer_hunyuan_video.py``): TeaCache's official signal is the first block's norm1
output (ali-vilab/TeaCache ``TeaCache4HunyuanVideo/teacache_sample_video.py``)."""
from lemica.families.base import FamilyAdapter, register

ADAPTER = register(FamilyAdapter("hunyuan", transformers=("diffusers:HunyuanVideoTransformer3DModel",),
                                 teacache_signal="norm1"))
