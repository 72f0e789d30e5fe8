"""External load check of the overload layer with the official `openai` SDK under asyncio.

Fires N streaming chat requests at once (20% `priority: "vip"`, the rest `normal`) at a
running `r1serve serve`, with the SDK's automatic retries off so every 429 is seen, and prints
per-class counts and time-to-first-token percentiles, plus the Retry-After values received.

    .venv/bin/python scripts/overload-openai.py --base-url http://127.0.0.1:18437/v1 -n 200
"""

import argparse
import asyncio
import statistics
import time

import openai


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


async def one(client, model, i, cls, max_tokens, out):
    t0 = time.perf_counter()
    rec = {"class": cls, "status": None, "ttft": None, "e2e": None, "retry_after": None, "done": False}
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Request {i}: write about the sea."}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            extra_body={"priority": cls},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and rec["ttft"] is None:
                rec["ttft"] = time.perf_counter() - t0
            if chunk.choices and chunk.choices[0].finish_reason:
                rec["done"] = True
        rec["status"] = 200
    except openai.APIStatusError as e:
        rec["status"] = e.status_code
        rec["retry_after"] = e.response.headers.get("retry-after")
    except openai.APIError as e:
        rec["status"] = f"error: {type(e).__name__}: {e}"
    rec["e2e"] = time.perf_counter() - t0
    out.append(rec)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--vip-share", type=float, default=0.2)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    client = openai.AsyncOpenAI(base_url=a.base_url, api_key="none", max_retries=0, timeout=300)
    model = (await client.models.list()).data[0].id
    out = []
    every = round(1 / a.vip_share) if a.vip_share > 0 else 0
    t0 = time.perf_counter()
    await asyncio.gather(*[
        one(client, model, i, "vip" if every and i % every == 0 else "normal", a.max_tokens, out)
        for i in range(a.n)
    ])
    wall = time.perf_counter() - t0
    print(f"openai {openai.__version__}: {a.n} streaming requests at once in {wall:.1f}s")
    print("| class | sent | 200 | 429 | other | truncated | TTFT p50 ms | TTFT p99 ms | 429 p99 ms | Retry-After |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for cls in ("vip", "normal"):
        rs = [r for r in out if r["class"] == cls]
        ok = [r for r in rs if r["status"] == 200]
        refused = [r for r in rs if r["status"] == 429]
        other = len(rs) - len(ok) - len(refused)
        trunc = sum(1 for r in ok if not r["done"])
        ttft = [r["ttft"] * 1e3 for r in ok if r["ttft"] is not None]
        ref = [r["e2e"] * 1e3 for r in refused]
        ras = sorted({r["retry_after"] for r in refused if r["retry_after"]})
        f = lambda x: "-" if x is None else f"{x:.0f}"
        for r in rs:
            if r["status"] not in (200, 429):
                print("  other:", r["status"])
                break
        print(f"| {cls} | {len(rs)} | {len(ok)} | {len(refused)} | {other} | {trunc} | "
              f"{f(pct(ttft, 50))} | {f(pct(ttft, 99))} | {f(pct(ref, 99))} | {','.join(ras) or '-'} |")


if __name__ == "__main__":
    asyncio.run(main())
