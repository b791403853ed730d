"""Everything that touches vLLM internals (pinned to vLLM 0.32.x, see `vseam.patches.plugin`).

`vseam.patches.plugin` (entry point and the per-process plugin state), `vseam.patches.wrap` (wrapping vLLM
functions once), `vseam.patches.head_scaling` (scales at `lm.layers.{l}.attn.head_out`: fold at load /
per-token table lookup), `vseam.patches.token_profiles` (token -> profile rows from the model runner's batch
layout), `vseam.patches.vllm_fixes` (guards for vLLM bugs), `vseam.patches.instructblip` (the out-of-tree
InstructBLIP model). What `vseam serve` hands every process is `vseam.serve.protocol`.
"""
