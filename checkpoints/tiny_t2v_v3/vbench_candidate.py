"""benchmarks/vbench_tiny.main unchanged, on an exported candidate pipeline instead of the shipped default."""
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
import vbench_tiny
from lemica.models import tiny_t2v
from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline

folder = Path(sys.argv[1])


def candidate(*a, **k):
    pipe = TinyT2VPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


vbench_tiny.tiny_t2v.load_default_pipeline = candidate
vbench_tiny.main(n=120, steps=30, guidance=[5.0], seed=0, batch_size=40, threads=2, untrained=False,
                 json_out=Path(sys.argv[2]), gif=None)
