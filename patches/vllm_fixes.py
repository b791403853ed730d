"""Guards for vLLM 0.32 bugs that a vseam server would otherwise hit.

* Out-of-vocabulary ids in logprobs: LLaVA-1.5's language model pads its vocabulary past the tokenizer (32064 rows
  vs 32002 tokens; the tiny checkpoints do the same). When such an id lands in a request's `top_logprobs`,
  vLLM 0.32's `convert_ids_list_to_tokens` iterates the tokenizer's `None` piece, the API server's output handler
  dies and every later request gets HTTP 500 (upstream: vllm-project/vllm PR #56100). We treat a missing piece as
  having no leading-space markers, so such a token is reported with its decoded text (usually "").
"""

from __future__ import annotations


def install() -> None:
    from vllm.tokenizers import detokenizer_utils as du

    from vseam.patches.wrap import wrap_once

    def make(original):
        def _restore_leading_spaces(raw_token, token_str, marker):
            if raw_token is None:  # id beyond the tokenizer's vocabulary
                return token_str
            return original(raw_token, token_str, marker)

        return _restore_leading_spaces

    wrap_once(du, "_restore_leading_spaces", make)
