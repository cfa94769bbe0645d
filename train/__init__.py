"""MOVA Studio training: data pipeline, trainer, stage configs, LoRA and the demo world."""
