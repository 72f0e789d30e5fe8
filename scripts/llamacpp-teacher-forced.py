#!/usr/bin/env python3
"""llama.cpp's deviation from a float64 reference, teacher-forced, through a running llama-server.

Usage: llamacpp-teacher-forced.py --base http://127.0.0.1:PORT --label NAME REF.json

REF.json is an hf64 reference (deepseek_hf_reference.py in the shared fixtures' tools): per
prompt the prompt ids, the greedy ids and the top-10 logprobs per step. For step s the server
gets prompt_ids + greedy_ids[:s] as tokens and predicts one token with n_probs 40 (logprobs of
the full softmax over raw logits: post_sampling_probs false); cache_prompt reuses the prefix.
d(s) is the largest |logprob - reference| over the reference's top-2 tokens, as in r1serve's
tests/deepseek_hf64.rs. A reference token missing from the server's top 40 counts with the
40th logprob (a lower bound of its d). Steps where llama-server returns no probabilities (a
token that is an incomplete UTF-8 sequence) are left out and counted.

Prints one line: `llamacpp NAME median=… p90=… greedy=A/B skipped=K`. Loopback only.
"""
import argparse
import json
import urllib.request

N_PROBS = 40


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def quantile(sorted_values, q):
    # The same nearest-lower rank as the Rust side.
    return sorted_values[int((len(sorted_values) - 1) * q)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("reference")
    args = ap.parse_args()
    assert args.base.startswith("http://127.0.0.1"), "loopback only"
    ref = json.load(open(args.reference))
    ds, agree, steps, skipped = [], 0, 0, 0
    for r in ref["results"]:
        for s, step in enumerate(r["steps"]):
            tokens = r["prompt_ids"] + r["greedy_ids"][:s]
            res = post(args.base, "/completion", {
                "prompt": tokens, "n_predict": 1, "n_probs": N_PROBS, "temperature": 0.0,
                "cache_prompt": True, "post_sampling_probs": False, "return_tokens": True,
            })
            probs = res.get("completion_probabilities") or []
            if not probs:
                skipped += 1
                continue
            top = {t["id"]: t["logprob"] for t in probs[0]["top_logprobs"]}
            floor = min(top.values())
            d = max(abs(top.get(tok, floor) - lp) for tok, lp in step["top10"][:2])
            ds.append(d)
            steps += 1
            best = max(top.items(), key=lambda kv: kv[1])[0]
            agree += best == r["greedy_ids"][s]
    ds.sort()
    print(f"llamacpp {args.label} median={quantile(ds, 0.5):.3e} p90={quantile(ds, 0.9):.3e} "
          f"greedy={agree}/{steps} skipped={skipped}")


if __name__ == "__main__":
    main()
