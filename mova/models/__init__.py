"""MOVA's model components. Parameter names equal the official checkpoint keys."""

from mova.models.audio_dit import AudioDiT
from mova.models.audio_vae import AudioVAE
from mova.models.bridge import DualTowerBridge
from mova.models.dual_tower import DualTowerDenoiser
from mova.models.video_dit import VideoDiT

__all__ = ["AudioDiT", "AudioVAE", "DualTowerBridge", "DualTowerDenoiser", "VideoDiT"]
