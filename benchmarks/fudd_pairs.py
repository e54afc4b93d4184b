"""What FuDD costs and how fast it re-ranks (issue: differentiate stage), in one run.

    python benchmarks/fudd_pairs.py [--out benchmarks/results/fudd_pairs.json] [--images 10000] [--model openai/gpt-4o-mini]

Setup: the 1000 ImageNet class names, the tiny open_clip config (promptgen-tiny, random weights,
seed 0), the initial head "a photo of a {c}.", and synthetic features for N images: image of
class y = normalise(W0[:, y] + sigma * g / sqrt(D)), g standard normal, sigma set so that the
initial head's top-1 is far from perfect (the regime where re-ranking matters).

(a) distinct confusable pairs for k = 5 and k = 10 (pairs inside some image's top-k), against all
    C(C-1)/2 = 499,500, and for the text route (5 most similar partners per class);
(b) the estimated price of asking about those pairs with one named model (litellm's price table;
    prompt tokens counted with litellm's tokenizer for every request, completion at most
    max_tokens per request, and at the fake server's answer length as a typical case);
(c) re-ranking throughput with the sentence embeddings computed once: differential sentences for
    every k=10 pair (the fake server's deterministic answers, 3-4 attributes per pair) embedded
    once (cold, then warm from the embedding cache), then all N images re-ranked, against two
    baselines measured in the same run on a subset: a per-image loop over cached embeddings
    (dict lookups, one head per class per image) and per-image re-encoding of the sentences with
    the text tower (what a script without an embedding cache does). All three must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from promptgen.classes import load_dataset  # noqa: E402
from promptgen.clip.embed import TextEncoder  # noqa: E402
from promptgen.clip.fudd import FuddReranker  # noqa: E402
from promptgen.clip.heads import build_head  # noqa: E402
from promptgen.clip.models import load_clip  # noqa: E402
from promptgen.clip.pairs import pairs_from_images, pairs_from_text  # noqa: E402
from promptgen.clip.sources import source_from_templates  # noqa: E402
from promptgen.llm.client import LLMClient  # noqa: E402
from promptgen.testing.fake_server import pair_answer  # noqa: E402
from promptgen.parsing import parse_pair_answer  # noqa: E402
from promptgen.stages.differentiate import DifferentiateJob, plan_requests  # noqa: E402
from promptgen.templates import load_template  # noqa: E402


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _best(row: torch.Tensor, top: list[int], class_vectors: list[torch.Tensor | None],
          initial_unit: torch.Tensor) -> int:
    """FuDD's prediction for one image: the top-k class whose normalised mean sentence vector (or,
    without sentences, initial column) is nearest."""
    scores = [float(row @ (F.normalize(vectors.sum(0), dim=0) if vectors is not None else initial_unit[:, c]))
              for c, vectors in zip(top, class_vectors)]
    return top[max(range(len(top)), key=scores.__getitem__)]


def loop_rerank(v: torch.Tensor, initial: torch.Tensor, k: int, side_vectors: dict, initial_unit: torch.Tensor
                ) -> torch.Tensor:
    """Baseline: one image at a time, one head per top-k class from cached sentence vectors."""
    predictions = []
    for row in F.normalize(v, dim=-1):
        top = (row @ initial).topk(k).indices.tolist()
        class_vectors = []
        for c in top:
            texts: dict[str, torch.Tensor] = {}
            for d in top:
                texts.update(side_vectors.get((c, d), {}))
            class_vectors.append(torch.stack(list(texts.values())) if texts else None)
        predictions.append(_best(row, top, class_vectors, initial_unit))
    return torch.tensor(predictions)


def reencode_rerank(v: torch.Tensor, initial: torch.Tensor, k: int, side_texts: dict, encoder: TextEncoder,
                    initial_unit: torch.Tensor) -> torch.Tensor:
    """Baseline: as above, but the sentences are encoded for every image (no embedding cache)."""
    predictions = []
    for row in F.normalize(v, dim=-1):
        top = (row @ initial).topk(k).indices.tolist()
        per_class = [list(dict.fromkeys(t for d in top for t in side_texts.get((c, d), []))) for c in top]
        flat = [t for texts in per_class for t in texts]
        vectors = encoder.encode_normalized(flat) if flat else torch.zeros(0, v.shape[1])
        class_vectors, position = [], 0
        for texts in per_class:
            class_vectors.append(vectors[position:position + len(texts)] if texts else None)
            position += len(texts)
        predictions.append(_best(row, top, class_vectors, initial_unit))
    return torch.tensor(predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fudd_pairs.json")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    parser.add_argument("--loop-images", type=int, default=1000, help="images for the per-image loop baseline")
    parser.add_argument("--reencode-images", type=int, default=20, help="images for the re-encoding baseline")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    results: dict = {"machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                                 "cpu": platform.processor() or platform.machine(), "threads": 2},
                     "images": args.images, "sigma": args.sigma}

    classes = load_dataset("imagenet")
    clip = load_clip("promptgen-tiny", "random", seed=0)
    cache = Path(tempfile.mkdtemp(prefix="fudd-bench-"))
    encoder = TextEncoder(clip, cache)
    initial = build_head("template", encoder=encoder, classes=classes,
                         sources=[source_from_templates("photo", classes)]).weights
    labels = torch.randint(0, len(classes), (args.images,))
    noise = torch.randn(args.images, initial.shape[0]) / initial.shape[0] ** 0.5
    features = F.normalize(F.normalize(initial[:, labels].T, dim=-1) + args.sigma * noise, dim=-1)
    top1 = float(((features @ initial).argmax(1) == labels).float().mean())
    results["initial_top1"] = top1
    print(f"{len(classes)} classes, {args.images:,} synthetic images (sigma {args.sigma}): initial head top-1 "
          f"{100 * top1:.2f}%")

    # (a) pairs
    plans = {}
    rows = []
    for k in (5, 10):
        started = time.perf_counter()
        plan = pairs_from_images(features, initial, k, labels=labels)
        seconds = time.perf_counter() - started
        plans[k] = plan
        rows.append({"route": f"images, k={k}", "pairs": len(plan.pairs), "all_pairs": plan.all_pairs,
                     "fraction": len(plan.pairs) / plan.all_pairs, "topk_recall": plan.stats["topk_recall"],
                     "pairs_min_count_2": int(sum(1 for s in plan.scores if s >= 2)), "seconds": seconds})
    text_plan = pairs_from_text(initial, 5)
    rows.append({"route": "text, 5 partners", "pairs": len(text_plan.pairs), "all_pairs": text_plan.all_pairs,
                 "fraction": len(text_plan.pairs) / text_plan.all_pairs, "topk_recall": None,
                 "pairs_min_count_2": None, "seconds": None})
    results["pairs"] = rows
    print("\n(a) distinct pairs to ask about")
    print(f"{'route':18} {'pairs':>9} {'of C(C-1)/2':>12} {'share':>7} {'top-k recall':>13} {'pairs seen >= 2x':>17}")
    for r in rows:
        recall = f"{100 * r['topk_recall']:.2f}%" if r["topk_recall"] is not None else "-"
        twice = f"{r['pairs_min_count_2']:,}" if r["pairs_min_count_2"] is not None else "-"
        print(f"{r['route']:18} {r['pairs']:>9,} {r['all_pairs']:>12,} {100 * r['fraction']:>6.2f}% {recall:>13} {twice:>17}")

    # (b) price
    template = load_template("fudd")
    client = LLMClient(args.model, progress=False)
    typical_completion = None
    price_rows = []
    for name, plan in (("k=5", plans[5]), ("k=10", plans[10]), ("text, 5 partners", text_plan)):
        job = DifferentiateJob(classes, template, "differential", plan)
        requests = plan_requests(job, client)
        estimate = client.estimate(requests)
        if typical_completion is None:
            sample = [pair_answer(classes.names[i], classes.names[j]) for i, j in plan.pairs[:200]]
            typical_completion = sum(client._count_tokens([{"role": "assistant", "content": s}]) for s in sample) / len(sample)
        prices = client.unit_prices()
        typical_cost = (estimate.prompt_tokens * prices[0] + typical_completion * len(requests) * prices[1]) / 1e6
        per_request_max = estimate.cost_usd / len(requests)
        price_rows.append({"pairs": name, "requests": len(requests), "prompt_tokens": estimate.prompt_tokens,
                           "max_completion_tokens": estimate.max_completion_tokens, "cost_max_usd": estimate.cost_usd,
                           "cost_typical_usd": typical_cost, "structured": job.fingerprint(client)["structured"],
                           "all_pairs_cost_max_usd": per_request_max * plan.all_pairs,
                           "all_pairs_cost_typical_usd": typical_cost / len(requests) * plan.all_pairs})
    results["price"] = {"model": args.model, "usd_per_million_tokens": list(client.unit_prices()),
                        "typical_completion_tokens": typical_completion, "rows": price_rows}
    print(f"\n(b) price with {args.model} (${client.unit_prices()[0]:g} / ${client.unit_prices()[1]:g} per million prompt / "
          f"completion tokens; typical answer {typical_completion:.0f} tokens, at most 600)")
    print(f"{'pairs':16} {'requests':>9} {'prompt tok':>11} {'$ typical':>10} {'$ at most':>10} {'all pairs $ typical':>20}")
    for r in price_rows:
        print(f"{r['pairs']:16} {r['requests']:>9,} {r['prompt_tokens']:>11,} {r['cost_typical_usd']:>10.2f} "
              f"{r['cost_max_usd']:>10.2f} {r['all_pairs_cost_typical_usd']:>20.2f}")

    # (c) re-ranking
    plan = plans[10]
    side_texts: dict[tuple[int, int], list[str]] = {}
    for i, j in plan.pairs:
        parsed = parse_pair_answer(pair_answer(classes.names[i], classes.names[j]), classes.names[i], classes.names[j])
        side_texts[(i, j)] = [a.first for a in parsed.attributes]
        side_texts[(j, i)] = [a.second for a in parsed.attributes]
    sentences = sum(len(t) for t in side_texts.values())
    unique = len({(c, t) for (c, _), texts in side_texts.items() for t in texts})
    reset_peak()
    started = time.perf_counter()
    reranker = FuddReranker.from_texts(initial, 10, side_texts, TextEncoder(clip, cache).encode_normalized)
    build_cold = time.perf_counter() - started
    started = time.perf_counter()
    reranker = FuddReranker.from_texts(initial, 10, side_texts, TextEncoder(clip, cache).encode_normalized)
    build_warm = time.perf_counter() - started
    started = time.perf_counter()
    logits = reranker.logits(features, labels)
    rerank_seconds = time.perf_counter() - started
    peak = peak_mib()
    fudd_predictions = logits.argmax(1)
    fudd_top1 = float((fudd_predictions == labels).float().mean())

    # baselines on subsets, same run
    unit_vectors = reranker.vectors
    # rebuild the (class, text) -> vector map exactly as from_texts numbers units
    order: dict[tuple[int, str], int] = {}
    for (c, d), texts in side_texts.items():
        for text in texts:
            order.setdefault((c, text), len(order))
    side_vectors = {(c, d): {t: unit_vectors[order[(c, t)]] for t in texts} for (c, d), texts in side_texts.items()}
    initial_unit = F.normalize(initial, dim=0)
    subset = features[:args.loop_images]
    started = time.perf_counter()
    loop_predictions = loop_rerank(subset, initial, 10, side_vectors, initial_unit)
    loop_seconds = time.perf_counter() - started
    subset_small = features[:args.reencode_images]
    fresh = TextEncoder(clip, None)
    started = time.perf_counter()
    reencode_predictions = reencode_rerank(subset_small, initial, 10, side_texts, fresh, initial_unit)
    reencode_seconds = time.perf_counter() - started
    agree_loop = float((loop_predictions == fudd_predictions[:args.loop_images]).float().mean())
    agree_reencode = float((reencode_predictions == fudd_predictions[:args.reencode_images]).float().mean())
    ours = args.images / rerank_seconds
    loop_rate = args.loop_images / loop_seconds
    reencode_rate = args.reencode_images / reencode_seconds
    results["rerank"] = {
        "pairs": len(plan.pairs), "sentences": sentences, "unique_class_sentences": unique,
        "embed_once_cold_s": build_cold, "embed_once_warm_s": build_warm,
        "images": args.images, "rerank_s": rerank_seconds, "images_per_s": ours, "peak_rss_mib": peak,
        "fudd_top1": fudd_top1, "topk_recall": reranker.report()["topk_recall"],
        "baseline_loop": {"images": args.loop_images, "seconds": loop_seconds, "images_per_s": loop_rate,
                          "agreement": agree_loop},
        "baseline_reencode": {"images": args.reencode_images, "seconds": reencode_seconds,
                              "images_per_s": reencode_rate, "agreement": agree_reencode},
        "speedup_vs_loop": ours / loop_rate, "speedup_vs_reencode": ours / reencode_rate}
    print(f"\n(c) re-ranking, k=10: {len(plan.pairs):,} pairs, {sentences:,} sentences "
          f"({unique:,} unique per class), embedded once in {build_cold:.1f} s (warm cache {build_warm:.1f} s)")
    print(f"{'method':44} {'images':>7} {'seconds':>8} {'images/s':>9} {'x':>7} {'same top-1':>10}")
    print(f"{'per image, re-encoding sentences (baseline)':44} {args.reencode_images:>7} {reencode_seconds:>8.2f} "
          f"{reencode_rate:>9.1f} {1.0:>7.1f} {100 * agree_reencode:>9.1f}%")
    print(f"{'per image loop, cached embeddings':44} {args.loop_images:>7} {loop_seconds:>8.2f} {loop_rate:>9.1f} "
          f"{loop_rate / reencode_rate:>7.1f} {100 * agree_loop:>9.1f}%")
    print(f"{'promptgen fudd (sparse, batched)':44} {args.images:>7} {rerank_seconds:>8.2f} {ours:>9.1f} "
          f"{ours / reencode_rate:>7.1f} {'-':>10}")
    print(f"fudd top-1 {100 * fudd_top1:.2f}% vs initial {100 * top1:.2f}% (random weights and synthetic sentences: "
          f"the accuracy is not meaningful, the speed is); peak RSS {peak:.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
