"""engine: one training loop for every method (see docs/engine.md).

`trainer.Trainer` (loop, AMP, NaN guard, validation, exact resume), `checkpoint` (atomic
safetensors checkpoints, `load_translator`), `optim` (optimizer/schedule builders), `data`
(recipe `data:` section), `validation` (recipe `val:` section), `logging` (metrics.jsonl +
TensorBoard), `seed` (seeds and RNG state), `sampler` (resumable batch order).
Submodules are imported on use so `import taskbridge.engine` stays cheap.
"""
