"""vLLM's in-process engine (``vllm.LLM``) as a :class:`~backtrack_trl.decoding.vllm_client.VLLMClient`; it needs
vLLM installed in this environment (:data:`INSTALL_HINT` says how).

Usage:

```python
from backtrack_trl.decoding.vllm_offline import VLLMOffline

client = VLLMOffline("models/countdown-tiny/backtrack-sft", dtype="float32")  # engine options go to vllm.LLM
```
"""

from __future__ import annotations

import sys

from backtrack_trl.decoding.vllm_client import MISSING_LOGPROB, Completion, VLLMClient
from backtrack_trl.errors import MissingDependencyError


INSTALL_HINT = (
    "run it with the Python of .venv-vllm (`make vllm-env` builds it: vLLM's CPU build, beside this package), or "
    "`pip install vllm` here on a GPU node; or start a server (`make vllm-serve MODEL=<model folder>`) and pass "
    "--vllm_server_base_url http://localhost:8000"
)


class VLLMOffline(VLLMClient):
    """vLLM's in-process engine: ``vllm.LLM(model, enable_prefix_caching=True, **engine_options)``."""

    def __init__(self, model: str, **engine_options):
        try:
            from vllm import LLM
        except ImportError as error:
            raise MissingDependencyError(
                f"backend=vllm without --vllm_server_base_url runs vLLM in this process, but vLLM is not installed "
                f"in this environment ({sys.executable}: {error}): {INSTALL_HINT}."
            ) from None
        engine_options.setdefault("enable_prefix_caching", True)
        self.llm = LLM(model=str(model), **engine_options)
        self.name_or_path = str(model)

    def generate(self, requests, settings):
        from vllm import SamplingParams

        prompts, params = [], []
        for request in requests:
            prompts.append({"prompt_token_ids": list(request.prompt_ids)})
            params.append(
                SamplingParams(
                    n=request.n,
                    max_tokens=request.max_tokens,
                    seed=request.seed,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    top_k=settings.top_k if settings.top_k > 0 else 0,
                    stop=list(settings.stop),
                    stop_token_ids=list(settings.stop_token_ids),
                    include_stop_str_in_output=True,
                    skip_special_tokens=False,
                    logprobs=1,
                    logprob_token_ids=[settings.backtrack_id],
                )  # fmt: skip
            )
        outputs = self.llm.generate(prompts, params, use_tqdm=False) if requests else []
        results = []
        for output in outputs:
            completions = []
            for sample in sorted(output.outputs, key=lambda o: o.index):
                sampled, backtrack = [], []
                for token, entry in zip(sample.token_ids, sample.logprobs or []):
                    sampled.append(float(entry[token].logprob) if token in entry else MISSING_LOGPROB)
                    item = entry.get(settings.backtrack_id)
                    backtrack.append(float(item.logprob) if item is not None else MISSING_LOGPROB)
                completions.append(
                    Completion(tuple(sample.token_ids), tuple(sampled), tuple(backtrack), str(sample.finish_reason))
                )
            results.append(completions)
        return results
