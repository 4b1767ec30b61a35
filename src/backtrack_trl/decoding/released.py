"""A faithful re-implementation of the released self-backtracking decoder (LAMDASZ-ML/Self-Backtracking), the
reference for speed and agreement. Written from the algorithm's description, not copied.

What it does, quirks included:

- one problem at a time (batch 1); for each state of the frontier, the stock ``generate`` with stochastic beam search
  (``num_beams=N, num_return_sequences=N, do_sample=True, temperature``, and transformers' default ``top_k=50``: the
  released call passes none), ``max_length`` total tokens (prompt included, default 50), EOS as padding, no stop
  strings: every beam runs until EOS or the length limit; a state already ``max_length`` tokens long is skipped (the
  released code skips the ``generate`` call that fails on it);
- a second, teacher-forced forward pass over all N outputs to score them: the mean log-probability of every token
  after the *original* prompt, padding included;
- an output is a candidate if its text contains ``Goal Reached!``; if it contains ``<backtrack>`` and fewer than K
  states were kept this round, it is rolled back *in text*: decoded without special tokens, cut before its
  second-to-last newline, re-tokenized (the root if that is not longer than the prompt); kept if that text was not
  visited;
- rounds: ``b + 1`` expansions (the released ``backtrack_times``); K = floor(sqrt(N)) (the released
  ``self.n = int(np.sqrt(k))`` with k = N: K = 2 at N=8, 5 at N=32);
- duplicates (same text between ``###Response:\\n`` and ``Goal Reached!``) have their scores summed;
- the answer is the best candidate; with none, the first output of the last ``generate`` call. The answer text is
  cut after the first marker, like the released evaluation script.

Usage:

```python
from backtrack_trl.decoding import ReleasedSelfBacktrackingDecoder

results = ReleasedSelfBacktrackingDecoder(model, tokenizer, n=8, b=1).solve(problems)
```
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList

from backtrack_trl.decoding.base import Decoder, check_options
from backtrack_trl.decoding.beam import MaskPastVocabLogitsProcessor
from backtrack_trl.decoding.results import Candidate, SearchResult
from backtrack_trl.decoding.sampling import _mix32
from backtrack_trl.decoding.search import resolve_k
from backtrack_trl.decoding.selection import aggregate_scores
from backtrack_trl.decoding.tokens import stock_generate
from backtrack_trl.tasks.base import BACKTRACK_TOKEN, GOAL_MARKER, RESPONSE_HEADER


def cut_at_marker(text: str) -> str:
    """The released evaluation's cut: up to and including the first of ``<backtrack>`` / ``Goal Reached!``."""
    positions = [(text.find(marker), marker) for marker in (BACKTRACK_TOKEN, GOAL_MARKER) if marker in text]
    if not positions:
        return text
    index, marker = min(positions)
    return text[: index + len(marker)]


class ReleasedSelfBacktrackingDecoder(Decoder):
    """See the module docstring. Options: ``n`` (N), ``b``, ``k`` (``"released"`` = ``"paper"`` = floor(sqrt N) as
    released, ``"sqrt_b"`` or an int), ``temperature``, ``top_k`` (50 as released; 0 = off), ``max_length`` (total
    tokens), ``duplicates`` (``"sum"`` as released, or ``"mean"``/``"max"``).
    """

    method = "released"

    def __init__(
        self,
        model,
        tokenizer,
        n: int = 8,
        b: int = 1,
        k: int | str = "released",
        temperature: float = 0.7,
        top_k: int = 50,
        max_length: int = 50,
        duplicates: str = "sum",
        seed: int = 0,
        validate_prompts: bool = True,
        task="countdown",
        batch_size: int | None = None,
    ):
        check_options(n=n, b=b, sampling_temperature=temperature, max_length=max_length, duplicates=duplicates)
        self.n, self.b = n, b
        super().__init__(model, tokenizer, batch_size=1, seed=seed, validate_prompts=validate_prompts, task=task)
        self.k = resolve_k(k, self.n, self.b)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = no top-k filter; 50 as released), got {top_k!r}.")
        self.temperature = temperature
        self.top_k = top_k
        self.max_length = max_length
        self.duplicates = duplicates
        self._special_texts = [t for t in (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) if t]

    def _clean(self, text: str) -> str:
        for special in self._special_texts:
            text = text.replace(special, "")
        return text

    def _response(self, sequence_text: str) -> str:
        """Answer text of a full decoded sequence, as the released evaluation reads it."""
        response = sequence_text.split(RESPONSE_HEADER, 1)[1] if RESPONSE_HEADER in sequence_text else ""
        return self._clean(cut_at_marker(response))

    def _rollback(self, sequence: torch.Tensor, init_ids: torch.Tensor) -> torch.Tensor:
        text = self.tokenizer.decode(sequence, skip_special_tokens=True)
        last = text.rfind("\n")
        second_last = text.rfind("\n", 0, last)
        ids = self.tokenizer(text[: second_last + 1], return_tensors="pt").input_ids.to(init_ids.device)
        return init_ids if ids.shape[1] <= init_ids.shape[1] else ids

    @torch.no_grad()
    def _solve_batch(self, prompts, prompt_ids, seeds) -> list[SearchResult]:
        (prompt,), (ids,), (seed,) = prompts, prompt_ids, seeds
        torch.manual_seed(int(_mix32(torch.tensor([seed]))))
        device = self.device
        init_ids = torch.tensor([ids], device=device)
        if init_ids.shape[1] >= self.max_length:
            raise ValueError(
                f"The prompt has {init_ids.shape[1]} tokens but max_length={self.max_length} counts the prompt too "
                "(the released decoder's budget): raise max_length above the prompt length."
            )
        eos = self.tokenizer.eos_token_id
        visited = [self.tokenizer.decode(init_ids[0], skip_special_tokens=True)]
        frontier = [init_ids]
        found: list[tuple[str, str, float, int]] = []  # (key text, answer text, score, round)
        last_output = None
        tokens_generated = forward_passes = rollbacks = 0
        for round_index in range(self.b + 1):
            next_frontier = []
            for state in frontier:
                if state.shape[1] >= self.max_length:  # generate raises on it; the released code skips the state
                    continue
                # The stock generate: a folder loaded with trust_remote_code has our search as its generate.
                output = stock_generate(
                    self.model,
                    input_ids=state,
                    attention_mask=torch.ones_like(state),
                    pad_token_id=eos,
                    max_length=self.max_length,
                    num_return_sequences=self.n,
                    do_sample=True,
                    temperature=self.temperature,
                    num_beams=self.n,
                    top_k=self.top_k or None,  # None: no top-k filter
                    # Not the model's generation config (a Llama base's top_p 0.9): only the options above sample.
                    top_p=None,
                    min_p=None,
                    typical_p=None,
                    # Ids past the tokenizer (an embedding padded to a multiple of 64) are not tokens.
                    logits_processor=LogitsProcessorList([MaskPastVocabLogitsProcessor(self.tokens.vocab_size)]),
                    return_dict_in_generate=True,
                )
                steps = output.sequences.shape[1] - state.shape[1]
                tokens_generated += steps * self.n
                forward_passes += steps + 1
                # The second, teacher-forced scoring pass (no attention mask, padding scored too).
                logits = self.model(output.sequences).logits[..., : self.tokens.vocab_size]
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                gathered = log_probs[:, :-1].gather(2, output.sequences[:, 1:, None]).squeeze(-1)
                scored = gathered[:, init_ids.shape[1] - 1 :]
                scores = (scored.sum(dim=1) / scored.shape[1]).tolist()
                texts = self.tokenizer.batch_decode(output.sequences, skip_special_tokens=False)
                for i, text in enumerate(texts):
                    if GOAL_MARKER in text:
                        key = text.split(RESPONSE_HEADER, 1)[-1].split(GOAL_MARKER)[0]
                        found.append((key, self._response(text), scores[i], round_index))
                    if len(next_frontier) < self.k and BACKTRACK_TOKEN in text:
                        state_ids = self._rollback(output.sequences[i], init_ids)
                        state_text = self.tokenizer.decode(state_ids[0], skip_special_tokens=True)
                        if state_text not in visited:
                            next_frontier.append(state_ids)
                            visited.append(state_text)
                last_output = output
            frontier = next_frontier
            rollbacks += len(next_frontier) if round_index < self.b else 0

        # Merge duplicates by their text between the header and the goal marker.
        groups: dict[str, list[tuple[str, float, int]]] = {}
        for key, answer, score, round_index in found:
            groups.setdefault(key, []).append((answer, score, round_index))
        candidates = []
        for key, members in groups.items():
            values = [score for _, score, _ in members]
            answer = members[0][0]
            candidates.append(
                Candidate(
                    text=answer,
                    reached_goal=answer.endswith(GOAL_MARKER),
                    end_reason="goal" if answer.endswith(GOAL_MARKER) else "backtrack",
                    mean_logprob=float(sum(values) / len(values)),
                    score=aggregate_scores(values, self.duplicates),
                    count=len(members),
                    num_tokens=len(self.tokenizer(answer, add_special_tokens=False)["input_ids"]),
                    round=min(r for _, _, r in members),
                )
            )
        if candidates:
            index = max(range(len(candidates)), key=lambda i: (candidates[i].score, -i))
            completion = candidates[index].text
        else:
            index = None
            if last_output is None:
                completion = ""
            else:
                text = self.tokenizer.decode(last_output.sequences[0], skip_special_tokens=False)
                completion = self._response(text)
        return [
            SearchResult(
                prompt=prompt,
                completion=completion,
                candidates=candidates,
                method=self.method,
                chosen_index=index,
                tokens_generated=tokens_generated,
                forward_passes=forward_passes,
                rollbacks=rollbacks,
            )
        ]
