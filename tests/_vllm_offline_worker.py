"""Run by the vLLM environment's Python (``.venv-vllm``): decode prompts with the in-process vLLM engine
(``backend="vllm"`` without a server) and print the answers as JSON, for tests/test_vllm_server.py.

    .venv-vllm/bin/python tests/_vllm_offline_worker.py <model folder> <prompts.json> <method> <options.json>
"""

import json
import sys


def main():
    from transformers import AutoTokenizer

    from backtrack_trl.decoding import build_decoder
    from backtrack_trl.decoding.vllm_offline import VLLMOffline

    model, prompts_file, method, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    prompts = json.loads(open(prompts_file).read())
    engine = VLLMOffline(model, dtype="float32", max_model_len=128, enable_chunked_prefill=False,
                         max_num_batched_tokens=8192)  # fmt: skip
    decoder = build_decoder(method, engine, AutoTokenizer.from_pretrained(model), **options)
    results = decoder.solve(prompts)
    print("RESULTS " + json.dumps([[r.completion, r.tokens_generated, r.rollbacks] for r in results]))


if __name__ == "__main__":  # vLLM's engine process re-imports this module (spawn)
    main()
