"""The core layer: what every stage and app builds on, importing nothing above it.

`vseam.core.families` (model-family adapters), `vseam.core.hooks` (the one intervention point, `HEAD_OUT`),
`vseam.core.engine` (the HF reference head engine), `vseam.core.errors` (user errors and how a command reports them),
`vseam.core.toy_checkpoints` (tiny checkpoints with the real layouts). The profile contract, also core, is
`vseam.head_profiles`.
"""
