"""Independent reference implementations of the zero-shot head methods, written from each
method's published code (never from promptgen's), for tests/test_faithful_heads.py.

Every function takes plain data (class names, the published JSON as a dict, feature tensors) and,
where texts are embedded, a callable `embed(texts) -> (n, D)` of L2-normalised float64 text
embeddings; `make_embed(clip)` builds one straight from the open_clip model. Nothing here imports
promptgen.

Sources (read-only mirrors of the authors' repositories, HEAD):
- CuPL        sarahpratt/CuPL                              generate_image_prompts.py, classify_imagenet.py
- DCLIP       sachit-menon/classify_by_description_release descriptor_strings.py, loading_helpers.py, load.py, main.py
- WaffleCLIP  ExplainableML/WaffleCLIP                     waffle_tools.py, base_main.py
- FuDD        BatsResearch/fudd                            prompt_factory.py, fudd_model.py, main.py
- ZPE         google/uncertainty-baselines                 experimental/multimodal/Zero_shot_prompt_ensembling_
                                                            for_text_image_models_results.ipynb (cells 13-16, 24)
- REAL        shubhamprshr27/NeglectedTailsVLM             analysis/laion/laion_parser.py
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

Embed = Callable[[Sequence[str]], torch.Tensor]

# tests/ -> the repository root; the word list promptgen ships (WaffleCLIP's word_list.pkl, decoded)
WAFFLE_WORDS = Path(__file__).resolve().parent.parent / "prompts" / "clip" / "waffle_words.txt"


# -- embedding ----------------------------------------------------------------------------------

def make_embed(clip, batch: int = 512) -> Embed:
    """e(t) = normalise(encode_text(tokenize(t))) in float64, from the open_clip model itself.
    Each distinct text is run through the model once per returned callable."""
    memo: dict[str, torch.Tensor] = {}

    def embed(texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        for start in range(0, len(missing), batch):
            chunk = missing[start:start + batch]
            with torch.no_grad():
                vectors = F.normalize(clip.model.encode_text(clip.tokenizer(chunk)).double(), dim=-1)
            memo.update(zip(chunk, vectors))
        if not texts:
            raise ValueError("nothing to embed")
        return torch.stack([memo[t] for t in texts])

    return embed


def mean_columns(embed: Embed, texts_per_class: Sequence[Sequence[str]], renormalise: bool) -> torch.Tensor:
    """(D, C): column c = mean over class c's texts of e(t) (every occurrence counts), optionally
    renormalised to unit length."""
    columns = torch.stack([embed(list(texts)).mean(dim=0) for texts in texts_per_class], dim=1)
    return F.normalize(columns, dim=0) if renormalise else columns


# -- CuPL ---------------------------------------------------------------------------------------

def ref_cupl_answer(raw: str) -> str:
    """generate_image_prompts.py:42 -- each completion (requested with stop=".") is stored with
    blank-line pairs removed and a "." added, whatever it ends with ("?" and "!" included)."""
    return raw.replace("\n\n", "") + "."


def ref_cupl_head(embed: Embed, class_names: Sequence[str], prompts: Mapping[str, Sequence[str]]) -> torch.Tensor:
    """classify_imagenet.py:39-63 (zeroshot_classifier_gpt with use_both=False): for each class the
    published sentences exactly as listed (a sentence listed twice is embedded twice), each
    embedding normalised, averaged, and the average renormalised. Columns in class order."""
    return mean_columns(embed, [list(prompts[c]) for c in class_names], renormalise=True)


# -- DCLIP --------------------------------------------------------------------------------------

def ref_wordify(name: str) -> str:
    """descriptor_strings.py / waffle_tools.py wordify: underscores become spaces."""
    return name.replace("_", " ")


def ref_descriptor_sentence(descriptor: str) -> str:
    """descriptor_strings.py make_descriptor_sentence (identical in loading_helpers.py and in
    WaffleCLIP's waffle_tools.py:214). Plain, case-sensitive prefix tests in this order:
    'a'/'an' -> "which is", 'has'/'often'/'typically'/'may'/'can' -> "which", 'used' -> "which is",
    anything else -> "which has". A prefix, not a word: "antlers" starts with "a", "hasty" with
    "has", "canine" with "can"; "" and "Antlers" fall through to "which has"."""
    if descriptor.startswith(("a", "an")):
        return "which is " + descriptor
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return "which " + descriptor
    if descriptor.startswith("used"):
        return "which is " + descriptor
    return "which has " + descriptor


def ref_dclip_texts(descriptors: Mapping[str, Sequence[str]], dataset: str) -> dict[str, list[str]]:
    """loading_helpers.py load_gpt_descriptions with load.py's settings (category_name_inclusion
    'prepend', apply_descriptor_modification True, before_text "", between_text ", ", after_text ""
    -- set to "." when the dataset is exactly 'imagenet', load.py:101): a class whose list is empty
    gets [''], and each descriptor d of class k becomes wordify(k) + ", " + sentence(d) + after."""
    after = "." if dataset == "imagenet" else ""
    out = {}
    for key, items in descriptors.items():
        items = list(items) if len(items) else [""]
        out[key] = [f"{ref_wordify(key)}, {ref_descriptor_sentence(d)}{after}" for d in items]
    return out


def ref_dclip_head(embed: Embed, descriptors: Mapping[str, Sequence[str]], dataset: str) -> torch.Tensor:
    """main.py: score(image, class) = mean over the class's sentences of image . e(sentence),
    i.e. the column is the mean of the normalised embeddings, not renormalised. Columns follow the
    key order of `descriptors` (the authors' label order: label_to_classname = the JSON's keys), and
    the sentences name the KEYS (e.g. DCLIP's ImageNet file says "eft" where a class list may say
    "newt")."""
    texts = ref_dclip_texts(descriptors, dataset)
    return mean_columns(embed, list(texts.values()), renormalise=False)


# -- WaffleCLIP ---------------------------------------------------------------------------------

def ref_waffle_words(path: Path = WAFFLE_WORDS) -> list[str]:
    """word_list.pkl as a list, one entry a line (the first entry is the empty string)."""
    return path.read_text(encoding="utf-8").splitlines()


def _waffle_sentence(descriptor: str, key: str) -> str:
    """waffle_tools.py structured_descriptor_builder with base_main.py's defaults:
    pre_descriptor_text "", label_before_text "A photo of a ", descriptor_separator ", ",
    label_after_text ".", apply_descriptor_modification True."""
    return f"A photo of a {ref_wordify(key)}, {ref_descriptor_sentence(descriptor)}."


def _waffle_setup(key_list: list[str], descr_list: list[str], words: list[str]):
    """The quantities waffle_tools.py computes before sampling (modes 'waffle' L458-478 and
    'waffle_and_gpt' L568-588): words cut to the mean word length of the class names, the
    character pool taken from the descriptors, the number of words per random descriptor, and the
    'a a, a a' shape of the random character sequence."""
    avg_num_words = int(np.max([np.round(np.mean([len(ref_wordify(k).split(" ")) for k in key_list])), 1]))
    avg_word_length = int(np.round(np.mean([np.mean([len(w) for w in ref_wordify(k).split(" ")])
                                            for k in key_list])))
    cut_words = [w[:avg_word_length] for w in words]

    descr_array = np.array(descr_list)
    pieces = np.unique([piece for d in descr_array for piece in d.split(" ")])
    pieces = [p.replace(",", "").replace(".", "") for p in pieces]
    characters = np.unique(list("".join(pieces)))

    # from the raw keys (not wordified), as the authors do
    num_spaces = int(np.round(np.mean([np.sum(np.array(list(k)) == " ") for k in key_list]))) + 1
    num_chars = int(np.ceil(np.mean([np.max([len(w) for w in k.split(" ")]) for k in key_list])))
    num_chars += num_spaces - num_chars % num_spaces
    groups = ["a" * (num_chars // num_spaces) for _ in range(num_spaces)]
    shape = " ".join(groups)
    return avg_num_words, cut_words, characters, shape


def _waffle_pair(key: str, avg_num_words: int, cut_words, characters, shape: str) -> list[str]:
    """One random-word descriptor then one random-character descriptor, each a global-RNG
    np.random.choice(..., 1, replace=False) per word / per character (waffle_tools.py L483-495)."""
    word = ""
    for position in range(avg_num_words):
        word += np.random.choice(cut_words, 1, replace=False)[0]
        if position < avg_num_words - 1:
            word += " "
    noise = ""
    for symbol in shape:
        noise += np.random.choice(characters, 1, replace=False)[0] if symbol != " " else ", "
    return [_waffle_sentence(word, key), _waffle_sentence(noise, key)]


def _share_match_key(texts: dict[str, list[str]], key_list: list[str]) -> dict[str, list[str]]:
    """waffle_tools.py L499-502: one class drawn with np.random.choice(key_list); every class takes
    its sentences with that class's (wordified) name replaced by its own (str.replace: every
    occurrence)."""
    match_key = str(np.random.choice(key_list))
    return {k: [t.replace(ref_wordify(match_key), ref_wordify(k)) for t in texts[match_key]] for k in key_list}


def ref_waffle_texts(descriptors: Mapping[str, Sequence[str]], seed: int,
                     waffle_count: int = 15, mode: str = "waffle",
                     words: Sequence[str] | None = None) -> dict[str, list[str]]:
    """WaffleCLIP's sentences per class for one repetition, as base_main.py makes them:
    seed_everything(rep) (waffle_tools.py:67, here only np.random.seed matters) then
    load_gpt_descriptions(mode) -- 'waffle' (L458-505) or 'waffle_and_gpt' (L568-632).

    `descriptors` are the dataset's DCLIP descriptors (after empty lists became [''], L232), which
    supply the character pool, and in 'waffle_and_gpt' the GPT sentences. Their keys, in order,
    are the authors' key_list: the label order and the names the sentences use. The global numpy
    RNG state is restored afterwards."""
    if mode not in ("waffle", "waffle_and_gpt"):
        raise ValueError(mode)
    key_list = list(descriptors)
    base = {k: (list(descriptors[k]) if len(descriptors[k]) else [""]) for k in key_list}
    descr_list = [d for k in key_list for d in base[k]]
    words = list(words) if words is not None else ref_waffle_words()

    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        avg_num_words, cut_words, characters, shape = _waffle_setup(key_list, descr_list, words)
        cut_words = np.array(cut_words)  # np.random.choice converts the list each call: same draws
        if mode == "waffle":
            texts = {k: [] for k in key_list}
            for k in key_list:
                for _ in range(waffle_count):
                    texts[k] += _waffle_pair(k, avg_num_words, cut_words, characters, shape)
            return _share_match_key(texts, key_list)

        effective = int(2 / 3 * waffle_count)
        texts = {k: [] for k in key_list}
        for k in key_list:
            for _ in range(effective):
                texts[k] += _waffle_pair(k, avg_num_words, cut_words, characters, shape)
        texts = _share_match_key(texts, key_list)
        # two GPT descriptors (with replacement) per random pair, L616-621
        for k in key_list:
            for _ in range(effective):
                for _ in range(2):
                    texts[k].append(_waffle_sentence(np.random.choice(base[k], 1)[0], k))
        # subsample to 3 * effective without replacement, class by class, L625-626
        for k in key_list:
            texts[k] = [str(t) for t in np.random.choice(texts[k], effective * 3, replace=False)]
        return texts
    finally:
        np.random.set_state(saved)


def ref_waffle_head(embed: Embed, descriptors: Mapping[str, Sequence[str]], seed: int, waffle_count: int = 15,
                    mode: str = "waffle", words: Sequence[str] | None = None) -> torch.Tensor:
    """base_main.py with aggregate 'mean' and no merge_predictions: the class score is the mean of
    image . e(sentence) over its sentences, so the column is the plain mean of the normalised
    embeddings (compute_description_encodings normalises each), not renormalised."""
    texts = ref_waffle_texts(descriptors, seed, waffle_count, mode, words)
    return mean_columns(embed, list(texts.values()), renormalise=False)


# -- FuDD ---------------------------------------------------------------------------------------

FUDD_TEMPLATE = "a photo of a {}."


def ref_fudd_names(class_names: Sequence[str]) -> list[str]:
    """prompt_factory.py PromptFactory.__init__: "_" in class names becomes " "."""
    return [c.replace("_", " ") for c in class_names]


def ref_fudd_pair_prompts(pairs: Mapping[str, dict], names: Sequence[str], classes: Sequence[int]) -> list[list[str]]:
    """get_cls_pair_prompts: the entry "min_max"; a missing entry gives each of the two classes the
    template "a photo of a {c}."; otherwise prompt_pair[0] goes to entry["classes"][0] and [1] to
    entry["classes"][1], placed by the position of those classes in `classes`."""
    key = f"{min(classes)}_{max(classes)}"
    if key not in pairs:
        return [[FUDD_TEMPLATE.format(names[c])] for c in classes]
    out: list[list[str]] = [[] for _ in classes]
    owner = pairs[key]["classes"]
    for item in pairs[key]["prompt_pairs"]:
        out[list(classes).index(owner[0])].append(item["prompt_pair"][0])
        out[list(classes).index(owner[1])].append(item["prompt_pair"][1])
    return out


def _fudd_finish(prompts: list[list[str]]) -> list[list[str]]:
    """list(set(p)) per class, then str.capitalize() of each text (first letter upper, the rest
    LOWER): the de-duplication runs before capitalize, so texts differing only in case both stay.
    (sorted() only fixes the order that set() leaves arbitrary; the mean does not depend on it.)"""
    return [[t.capitalize() for t in sorted(set(p))] for p in prompts]


def ref_fudd_prompts(pairs: Mapping[str, dict], class_names: Sequence[str], class_ids: Sequence[int]) -> list[list[str]]:
    """get_prompts(class_ids, 'gpt') for len(class_ids) >= 2: for every 2-combination of the
    positions, that pair's prompts are added to its two classes; then _fudd_finish."""
    names = ref_fudd_names(class_names)
    prompts: list[list[str]] = [[] for _ in class_ids]
    for a, b in itertools.combinations(range(len(class_ids)), 2):
        first, second = ref_fudd_pair_prompts(pairs, names, [class_ids[a], class_ids[b]])
        prompts[a] += first
        prompts[b] += second
    return _fudd_finish(prompts)


def ref_fudd_static_prompts(pairs: Mapping[str, dict], class_names: Sequence[str]) -> list[list[str]]:
    """get_all_classes_prompts('gpt'): every entry of the file (only those present) adds its
    prompts to its classes; a class left with none gets "a photo of a {c}."; then _fudd_finish."""
    names = ref_fudd_names(class_names)
    prompts: list[list[str]] = [[] for _ in names]
    for entry in pairs.values():
        ids = entry["classes"]
        first, second = ref_fudd_pair_prompts(pairs, names, ids)
        prompts[ids[0]] += first
        prompts[ids[1]] += second
    for c, texts in enumerate(prompts):
        if not texts:
            texts.append(FUDD_TEMPLATE.format(names[c]))
    return _fudd_finish(prompts)


def ref_fudd_single_template(class_names: Sequence[str]) -> list[list[str]]:
    """get_all_classes_prompts('single_template'), FuDD's step one when follow_up is on
    (fudd_model.py __init__): capitalize("a photo of a {c}.") per class."""
    return [[FUDD_TEMPLATE.format(c).capitalize()] for c in ref_fudd_names(class_names)]


def ref_fudd_embeddings(embed: Embed, texts_per_class: Sequence[Sequence[str]]) -> torch.Tensor:
    """fudd_model.py get_text_embeddings: per class, mean of the normalised embeddings, then
    renormalised. Returned as (D, C) columns."""
    return mean_columns(embed, texts_per_class, renormalise=True)


def ref_fudd_static_head(embed: Embed, pairs: Mapping[str, dict], class_names: Sequence[str]) -> torch.Tensor:
    """FuDD with step_one_source 'gpt' and no follow-up: one head from get_all_classes_prompts('gpt')."""
    return ref_fudd_embeddings(embed, ref_fudd_static_prompts(pairs, class_names))


def ref_fudd_rerank(embed: Embed, pairs: Mapping[str, dict], class_names: Sequence[str], features: torch.Tensor,
                    k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fudd_model.py forward with follow_up: image features normalised; step-one logits against
    the single-template head; per image (image_logit_pred) the top-k classes by
    argsort(descending)[:k], their prompts from get_prompts, and new logits image . column.

    Returns (initial (N, C) cosines, top (N, k) class indices in descending initial order,
    new (N, k) cosines). main.py's prediction is top[i, argmax(new[i])]."""
    v = F.normalize(features.double(), dim=-1)
    initial_head = ref_fudd_embeddings(embed, ref_fudd_single_template(class_names))
    initial = v @ initial_head
    tops, news = [], []
    for image, logits in zip(v, initial):
        top = torch.argsort(logits, descending=True)[:k]
        columns = ref_fudd_embeddings(embed, ref_fudd_prompts(pairs, class_names, top.tolist()))
        tops.append(top)
        news.append(image @ columns)
    return initial, torch.stack(tops), torch.stack(news)


# -- ZPE ----------------------------------------------------------------------------------------

def ref_zpe_prompt_embeddings(embed: Embed, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(P, C, D): one normalised embedding per (template, class), template.format(class) (cell 10:
    each (prompt, class) embedding normalised on its own, nothing averaged)."""
    return torch.stack([embed([t.format(c) for c in class_names]) for t in templates])


def ref_zpe_scores(E: torch.Tensor, images: torch.Tensor, pool: torch.Tensor | None = None,
                   logit_scale: float = 100.0) -> torch.Tensor:
    """Cell 15 get_weights with img_mean=True, frac_test=1: logits = scale * cos (cell 13); the
    correction is the per-(prompt, class) mean over the test images ('test'), or the average of
    that and the same mean over the pool images ('both'); the score of prompt p is the mean over
    test images of the max over classes of the corrected logits. Returns (P,)."""
    v = F.normalize(images.double(), dim=-1)
    logits = logit_scale * torch.einsum("nd,pcd->npc", v, E)
    test_mean = logits.mean(dim=0, keepdim=True)
    if pool is None:
        corrected = logits - test_mean
    else:
        m = F.normalize(pool.double(), dim=-1)
        pool_mean = (logit_scale * torch.einsum("nd,pcd->npc", m, E)).mean(dim=0, keepdim=True)
        corrected = logits - 0.5 * (pool_mean + test_mean)
    return corrected.max(dim=2).values.mean(dim=0)


def ref_zpe_mad_select(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Cell 16 mad_method: median and raw median absolute deviation (scipy's default scale 1.0);
    keep index i when (score_i - median) / mad > threshold (strict, upper side only)."""
    scores = np.asarray(scores, dtype=np.float64)
    median = np.median(scores)
    mad = np.abs(np.median(np.abs(scores - median)))
    return np.array([i for i, s in enumerate(scores) if (s - median) / mad > threshold], dtype=np.int64)


def ref_zpe_head(embed: Embed, class_names: Sequence[str], templates: Sequence[str], images: torch.Tensor,
                 pool: torch.Tensor | None = None, mode: str = "softmax", tau: float | None = None,
                 logit_scale: float = 100.0) -> tuple[torch.Tensor, dict]:
    """The classifier whose logits are cell 14's agg_logits over the selected prompts, expressed
    as a (D, C) head W with logits = logit_scale * v . W:

    - 'softmax' (weighting 'softmax_scores', threshold 'NA'): w = softmax over ALL prompts' scores;
      W = mean over the P prompts of w_p e_p = (1/P) sum_p w_p e_p.
    - 'mad' (softmax_scores, threshold tau): S = mad_method(scores, tau); the kept prompts keep their
      weights from the full softmax (not renormalised): W = (1/|S|) sum_{p in S} w_p e_p.
    - 'mad-equal' (weighting 'equal', threshold tau): W = (1/|S|) sum_{p in S} e_p.

    agg_logits takes a MEAN over the prompt axis, hence the 1/P and 1/|S| factors; the per-prompt
    logits fed in are the uncorrected ones. Returns (W, {scores, softmax, selected})."""
    E = ref_zpe_prompt_embeddings(embed, class_names, templates)
    scores = ref_zpe_scores(E, images, pool, logit_scale)
    softmax = torch.softmax(scores, dim=0)
    if mode == "softmax":
        selected = np.arange(len(templates))
        weights = softmax
    elif mode in ("mad", "mad-equal"):
        selected = ref_zpe_mad_select(scores.numpy(), tau)
        if len(selected) == 0:
            raise ValueError("no prompt passes the threshold (the notebook would fail here)")
        weights = softmax if mode == "mad" else torch.ones_like(softmax)
    else:
        raise ValueError(mode)
    chosen = torch.from_numpy(selected)
    W = torch.einsum("p,pcd->dc", weights[chosen], E[chosen]) / len(selected)
    return W, {"scores": scores, "softmax": softmax, "selected": selected}


# -- REAL ---------------------------------------------------------------------------------------

def ref_real_clean_text(text: str) -> str:
    """laion_parser.py clean_text (L215-216): strip, drop ' and ", '-' and '_' to spaces, one pass of
    double-space to single, lower case."""
    return (text.strip().replace("'", "").replace('"', "").replace("-", " ").replace("_", " ")
            .replace("  ", " ").lower())


def _real_words(text: str) -> set[str]:
    return set(re.sub(r"[^\w\s]", "", ref_real_clean_text(text)).split())


def ref_real_most_common_name(official: str, alternates: Mapping[str, int]) -> str:
    """laion_parser.py find_most_common_name (L218-255), RELAXED strategy, with the official name a
    parameter (the published function reads an undefined `official_name`).

    The alternates are visited by descending count (a stable sort: ties keep their listed order).
    The running count starts at the official name's count (looked up verbatim, else its cleaned
    form -- a KeyError when neither is listed, as in the original). An alternate with a strictly
    larger count than the running count becomes the name when its word set (cleaned, punctuation
    removed) equals the official one's, or is NOT a subset of it; either way the running count
    becomes its count (so a more frequent subset, e.g. "honda" for "honda accord", blocks the
    names after it without being chosen)."""
    ordered = dict(sorted(alternates.items(), key=lambda item: item[1], reverse=True))
    best = official
    best_count = ordered[official] if official in ordered else ordered[ref_real_clean_text(official)]
    official_words = _real_words(official)
    for name, count in ordered.items():
        words = _real_words(name)
        if best_count < count:
            if words == official_words or not words.issubset(official_words):
                best = name
            best_count = count
    return best
