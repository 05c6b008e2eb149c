"""One trainer for every model: data in memory, bf16 autocast, checkpoints, manifest."""
