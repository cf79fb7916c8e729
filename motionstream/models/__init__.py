"""Neural network modules: DiT, KV cache, track head, video codec, text encoders, checkpoints."""
