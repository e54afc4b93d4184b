"""Head building and evaluation speed on this CPU, in one run (issue: CLIP heads and evaluation).

    python benchmarks/clip_heads.py [--out benchmarks/results/clip_heads.json] [--quick]

(a) template head: the first 50 ImageNet classes x OpenAI's 80 templates (4,000 prompts) on a
    randomly initialised ViT-B-32 -- open_clip's `build_zero_shot_classifier`, then ours with a cold
    cache, then ours with a warm cache (a fresh encoder reading the disk cache);
(b) the same for a CuPL-sized set: 20 classes x 50 sentences of 10-40 tokens (open_clip's builder
    gets them as 50 per-class "templates", since it needs the same count per class);
(c) evaluation of 10 heads on 50,000 x 512 cached features, 1000 classes.

Ratios are against open_clip's builder in the same run; the heads must agree within 1e-5. Peak
memory is the process's peak RSS during each step (reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from open_clip import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, build_zero_shot_classifier  # noqa: E402

from promptgen.classes import ClassList  # noqa: E402
from promptgen.clip.embed import TextEncoder  # noqa: E402
from promptgen.clip.evaluate import evaluate_heads  # noqa: E402
from promptgen.clip.heads import Head, build_head  # noqa: E402
from promptgen.clip.models import load_clip  # noqa: E402
from promptgen.clip.sources import PromptSource, TEMPLATE_DIR, source_from_templates  # noqa: E402


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(function):
    reset_peak()
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started, peak_mib()


def cupl_like_sentences(classes: list[str], per_class: int, tokenizer, seed: int = 0) -> list[list[str]]:
    """Sentences of 10-40 CLIP tokens (start and end tokens included) built from the WaffleCLIP word
    list, lengths spread evenly over that range (deterministic)."""
    rng = random.Random(seed)
    words = [w for w in (TEMPLATE_DIR / "waffle_words.txt").read_text().split() if w.isalpha()]
    out = []
    for name in classes:
        sentences = []
        while len(sentences) < per_class:
            target = rng.randint(10, 40)
            sentence = f"A {name} is"
            while True:
                candidate = f"{sentence} {rng.choice(words)}"
                if int(tokenizer([candidate + "."]).argmax()) + 1 > target:
                    break
                sentence = candidate
            length = int(tokenizer([sentence + "."]).argmax()) + 1
            if 10 <= length <= 40:
                sentences.append(sentence + ".")
        out.append(sentences)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "clip_heads.json")
    parser.add_argument("--quick", action="store_true", help="tiny model and small sizes (a smoke run)")
    parser.add_argument("--steps", default="abc", help="which steps to run (a, b, c); the others keep their "
                                                        "results from --out")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    arch = "promptgen-tiny" if args.quick else "ViT-B-32"
    n_template_classes, n_cupl_classes = (10, 5) if args.quick else (50, 20)
    clip = load_clip(arch, "random", seed=0)
    previous = json.loads(args.out.read_text()) if args.out.is_file() and args.steps != "abc" else {}
    rows, results = [], {**previous, "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                     "cpus": os.cpu_count(), "threads": torch.get_num_threads()},
                         "model": f"{arch} (random weights)"}

    def bench(label: str, classnames: list[str], baseline_templates: list, source: PromptSource) -> dict:
        classes = ClassList(dataset="bench", names=tuple(classnames))
        prompts = sum(source.counts)
        baseline, base_s, base_mem = timed(lambda: build_zero_shot_classifier(
            clip.model, clip.tokenizer, classnames, baseline_templates, num_classes_per_batch=10))
        with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as cache:
            cold_encoder = TextEncoder(clip, Path(cache))
            cold, cold_s, cold_mem = timed(lambda: build_head("template", encoder=cold_encoder, classes=classes,
                                                              sources=[source]))
            warm_encoder = TextEncoder(clip, Path(cache))  # a new encoder: vectors come from disk
            warm, warm_s, warm_mem = timed(lambda: build_head("template", encoder=warm_encoder, classes=classes,
                                                              sources=[source]))
        assert warm_encoder.stats.encoded == 0
        entry = {"prompts": prompts, "open_clip_s": base_s, "cold_s": cold_s, "warm_s": warm_s,
                 "cold_speedup": base_s / cold_s, "warm_speedup": base_s / warm_s,
                 "max_abs_diff_cold": float((cold.weights - baseline).abs().max()),
                 "max_abs_diff_warm": float((warm.weights - baseline).abs().max()),
                 "positions_run": cold_encoder.stats.positions, "positions_full": cold_encoder.stats.full_positions,
                 "peak_rss_mib": {"open_clip": base_mem, "cold": cold_mem, "warm": warm_mem}}
        rows.append((label, prompts, f"{base_s:.2f}", f"{cold_s:.2f}", f"{warm_s:.3f}", f"{entry['cold_speedup']:.1f}x",
                     f"{entry['warm_speedup']:.0f}x", f"{max(entry['max_abs_diff_cold'], entry['max_abs_diff_warm']):.1e}",
                     f"{base_mem:.0f}/{cold_mem:.0f}/{warm_mem:.0f}"))
        return entry

    names = list(IMAGENET_CLASSNAMES[:n_template_classes])
    template_classes = ClassList(dataset="bench", names=tuple(names))
    if "a" in args.steps:
        results["a_templates"] = bench("(a) 80 templates", names, list(OPENAI_IMAGENET_TEMPLATES),
                                   source_from_templates("openai80", template_classes))
    cupl_names = list(IMAGENET_CLASSNAMES[100:100 + n_cupl_classes])
    if "b" in args.steps:
        sentences = cupl_like_sentences(cupl_names, 50, clip.tokenizer)
        lengths = [int(clip.tokenizer([s]).argmax()) + 1 for per in sentences for s in per]
        index = {name: i for i, name in enumerate(cupl_names)}
        per_class_templates = [(lambda c, j=j: sentences[index[c]][j]) for j in range(50)]
        source = PromptSource("cupl-like", "set", sentences, [["q"] * 50 for _ in sentences])
        results["b_cupl"] = bench("(b) CuPL-sized", cupl_names, per_class_templates, source)
        results["b_cupl"]["token_lengths"] = {"min": min(lengths), "max": max(lengths),
                                              "mean": sum(lengths) / len(lengths)}

    # (c) 10 heads on 50,000 x 512 features, 1000 classes
    n_images, dim, n_classes = (5000, 64, 100) if args.quick else (50_000, 512, 1000)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n_images, dim, generator=generator)
    labels = torch.randint(0, n_classes, (n_images,), generator=generator)
    heads = [Head(torch.nn.functional.normalize(torch.randn(dim, n_classes, generator=generator), dim=0),
                  {"name": f"h{i}"}) for i in range(10)]
    if "c" in args.steps:
        metrics, eval_s, eval_mem = timed(lambda: evaluate_heads(features, labels, heads, n_classes))
        results["c_eval"] = {"images": n_images, "dim": dim, "classes": n_classes, "heads": 10, "seconds": eval_s,
                             "peak_rss_mib": eval_mem, "top1_first_head": metrics[0]["top1"]}
    header = ("step", "prompts", "open_clip s", "ours cold s", "ours warm s", "cold x", "warm x", "max |diff|",
              "peak RSS MiB (oc/cold/warm)")
    table = [header] + rows
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    if "c" in args.steps:
        print(f"(c) eval: 10 heads on {n_images} x {dim} features, {n_classes} classes: {eval_s:.2f} s, "
              f"peak RSS {eval_mem:.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
