"""Everything that touches vLLM internals (pinned to vLLM 0.32.x, see `patches.plugin`).

`patches.plugin` (entry point), `patches.config` (the env-var config `vseam serve` hands to every vLLM process),
`patches.head_scaling` (scales at `lm.layers.{l}.attn.head_out`: fold at load / per-token table lookup),
`patches.token_profiles` (token -> profile rows from the model runner's batch layout), `patches.vllm_fixes`
(guards for vLLM bugs), `patches.instructblip` (the out-of-tree InstructBLIP model).
"""
