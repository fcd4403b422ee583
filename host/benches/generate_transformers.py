"""transformers' side of `cargo bench -p tuner --bench generate`.

Loads the model folder the bench wrote (float32, CPU) once per attention
implementation and prints one JSON line per (implementation, batch):

    {"attn": "sdpa", "batch": 1, "prefill_tok_s": ..., "decode_tok_s": ...,
     "threads": 2, "torch": "...", "transformers": "..."}

- prefill: one forward over the `[batch, prompt_len]` prompt with
  `logits_to_keep=1` (what `generate` itself runs first), median of 3.
- decode: `model.generate(do_sample=False, max_new_tokens=N,
  min_new_tokens=N, use_cache=True)` (median of `--generate-repeats`)
  minus the prefill time. `generate` takes
  the first new token from the prefill's logits, so the rest is N - 1 decode
  forwards: decode tok/s = (N - 1) * batch / (generate - prefill). The tuner
  side counts its decode steps the same way. `generate_tok_s` is N * batch
  over the whole `generate` call.
- with `--no-cache-steps K` (first implementation, batch 1 only):
  `generate(use_cache=False)` of K tokens, every step a full forward over
  the sequence so far; K / time.

Everything runs under `torch.inference_mode()` with
`torch.set_num_threads(os.cpu_count())`.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch", default="1", help="batch size, or a comma list (1,8)")
    ap.add_argument("--attn", default="sdpa,eager", help="attention implementations, comma list")
    ap.add_argument("--prefill-repeats", type=int, default=3)
    ap.add_argument("--generate-repeats", type=int, default=1)
    ap.add_argument(
        "--no-cache-steps",
        type=int,
        default=0,
        help="also time generate(use_cache=False) for this many tokens (first attn, batch 1)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    batches = [int(b) for b in args.batch.split(",") if b]
    n = args.new_tokens

    for ai, attn in enumerate([a for a in args.attn.split(",") if a]):
        model = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.float32, attn_implementation=attn
        )
        model.eval()
        vocab = model.config.vocab_size
        # Random ids below the special tokens (the random model has no
        # preference either way; this just keeps them ordinary text ids).
        high = min(vocab, 151643)
        for b in batches:
            gen = torch.Generator().manual_seed(args.seed + b)
            ids = torch.randint(0, high, (b, args.prompt_len), generator=gen)
            mask = torch.ones_like(ids)
            with torch.inference_mode():
                # Warm-up on a short prompt: first calls pay one-off costs.
                short = ids[:, :8]
                model(input_ids=short, attention_mask=mask[:, :8], logits_to_keep=1)
                model.generate(
                    input_ids=short,
                    attention_mask=mask[:, :8],
                    do_sample=False,
                    max_new_tokens=2,
                    min_new_tokens=2,
                    pad_token_id=0,
                )
                prefill = []
                for _ in range(args.prefill_repeats):
                    t0 = time.perf_counter()
                    model(input_ids=ids, attention_mask=mask, logits_to_keep=1, use_cache=True)
                    prefill.append(time.perf_counter() - t0)
                prefill_s = statistics.median(prefill)
                runs = []
                for _ in range(args.generate_repeats):
                    t0 = time.perf_counter()
                    out = model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        do_sample=False,
                        max_new_tokens=n,
                        min_new_tokens=n,
                        use_cache=True,
                        pad_token_id=0,
                    )
                    runs.append(time.perf_counter() - t0)
                gen_s = statistics.median(runs)
                no_cache = None
                if args.no_cache_steps > 0 and ai == 0 and b == 1:
                    k = args.no_cache_steps
                    t0 = time.perf_counter()
                    model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        do_sample=False,
                        max_new_tokens=k,
                        min_new_tokens=k,
                        use_cache=False,
                        pad_token_id=0,
                    )
                    no_cache = k / (time.perf_counter() - t0)
            made = out.shape[1] - args.prompt_len
            if made != n:
                print(f"generate made {made} tokens, expected {n}", file=sys.stderr)
                return 1
            decode_s = gen_s - prefill_s
            print(
                json.dumps(
                    {
                        "attn": attn,
                        "batch": b,
                        "prefill_tok_s": b * args.prompt_len / prefill_s,
                        # None when noise made generate faster than its prefill.
                        "decode_tok_s": (n - 1) * b / decode_s if decode_s > 0 else None,
                        "generate_tok_s": n * b / gen_s,
                        "no_cache_tok_s": no_cache,
                        "prefill_s": prefill_s,
                        "generate_s": gen_s,
                        "threads": torch.get_num_threads(),
                        "torch": torch.__version__,
                        "transformers": transformers.__version__,
                    }
                ),
                flush=True,
            )
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
