"""CLIP image encoder of Wan's image-to-video models: image -> the tokens the DiT's img_emb reads.

    encoder = CLIPImageEncoder(folder)                 # transformers CLIPVisionModel, local files only
    tokens = encoder.encode(image)                     # [B, 3, H, W] in [-1, 1] -> [B, 257, 1280]

Upstream (Wan-Video/Wan2.1 wan/modules/clip.py, CLIPModel.visual) resizes the image to the
tower's square input (bicubic), normalises it with the CLIP mean / std and keeps the residual
stream after 31 of the 32 blocks of open-clip's XLM-RoBERTa ViT-H/14 (`use_31_block=True`: no
final block, no post-norm, no head), all 257 tokens (class token + 16 x 16 patches). diffusers'
WanImageToVideoPipeline reads the same tensor from transformers' CLIPVisionModel as
`hidden_states[-2]`. This class loads that CLIPVisionModel from a local folder (e.g. the
`image_encoder/` folder of a diffusers Wan I2V pipeline); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel

from motionstream.models.checkpoints import WeightsNotFound

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)      # wan/modules/clip.py (OpenAI CLIP constants)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SKIPPED_FINAL_BLOCKS = 1                             # use_31_block: the last block's output is not used


class CLIPImageEncoder:
    """A transformers CLIPVisionModel from a local folder, read as Wan I2V reads its CLIP tower."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        path = Path(path)
        if not (path / "config.json").is_file():
            raise WeightsNotFound(f"no CLIP image encoder folder at {path} (a transformers CLIPVisionModel: "
                                  "config.json + weights, e.g. the image_encoder/ folder of a diffusers Wan I2V "
                                  "pipeline downloaded beforehand)")

        self.model = CLIPVisionModel.from_pretrained(str(path), local_files_only=True, dtype=dtype).eval().to(device)
        self.device, self.dtype = torch.device(device), dtype
        self.image_size = int(self.model.config.image_size)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W] in [-1, 1] -> tokens float32 [B, 1 + (size / patch)^2, hidden]."""
        x = F.interpolate(image.to(self.device, torch.float32), size=(self.image_size, self.image_size),
                          mode="bicubic", align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        x = ((x * 0.5 + 0.5) - mean) / std
        out = self.model(pixel_values=x.to(self.dtype), output_hidden_states=True)
        return out.hidden_states[-1 - SKIPPED_FINAL_BLOCKS].float()
