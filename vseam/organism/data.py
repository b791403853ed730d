"""Training and validation batches for the model organism, built from the `shapes` world.

A pool of rendered training scenes is generated once (seeded, cached on disk) and each scene is asked many
questions over training: its generator question and every question the scene graph answers. Batches are laid out
exactly as `HeadEngine.encode` lays them out (Table-8 yes/no prompt through the chat template, left padding,
position ids from the attention mask), so the model is trained on what the server and the calibrator feed it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from vseam.calibrate.datasets import shapes
from vseam.calibrate.datasets.shapes.open_questions import TYPES as OPEN_TYPES, location_word, open_questions
from vseam.core.vocab import SUBTYPES
from vseam.core.families import FAMILIES
from vseam.core.files import atomic_write_with
from vseam.core.toy_checkpoints import CLIP_MEAN, CLIP_STD

FAMILY = FAMILIES["llava"]
#: per-patch label vocabularies of the vision pre-training phase (index 0 = background)
PATCH_SHAPES = ("background",) + shapes.SHAPES
PATCH_COLORS = ("background",) + tuple(shapes.COLORS)
PATCH_TEXTURES = ("background",) + shapes.TEXTURES
#: a patch is labelled with the object covering most of it, if that object covers at least this many pixels
PATCH_MIN_PIXELS = 12
#: the training-only description task (like LLaVA's caption alignment stage): its user text and relation words
CAPTION_PROMPT = "Describe the picture."
CAPTION_RELATIONS = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below",
                     shapes.CONTACT: "touching"}


def scene_facts(scene: shapes.Scene) -> dict:
    """What a description may say about a scene: each object's words, and every relation of the scene graph."""
    graph = shapes.scene_graph(scene)
    name = {oid: o["name"] for oid, o in graph["objects"].items()}
    rels = [[name[a], CAPTION_RELATIONS[r["name"]], name[r["object"]]]
            for a, o in graph["objects"].items() for r in o["relations"]]
    return {"objects": [[o.color, o.texture, o.shape, location_word(o, scene.size)] for o in scene.objects],
            "relations": rels}


def caption(facts: dict, rng: np.random.Generator, locations: bool = True, pairs: int = 1) -> str:
    """A description in random order: every object's three words (shuffled) and where it is, then the relations
    of `pairs` random pairs of objects (0: every pair, in random order), e.g. "striped red circle left and star
    blue plain right . circle left of star , circle touching star"."""
    objs = [list(o) for o in facts["objects"]]
    rng.shuffle(objs)
    for o in objs:
        words = o[:3]
        rng.shuffle(words)
        o[:3] = words
    text = " and ".join(" ".join(o if locations else o[:3]) for o in objs)
    rels = facts["relations"]
    if not rels:
        return text
    if pairs == 1:  # the first organisms' draw: one relation's pair (kept so their recipes reproduce)
        a, _, b = rels[int(rng.integers(len(rels)))]
        chosen = [(a, b)]
    else:
        ordered = list(dict.fromkeys((x, y) for x, _, y in rels))
        chosen = [ordered[k] for k in rng.permutation(len(ordered))[: pairs or len(ordered)]]
    return text + " . " + " , ".join(f"{x} {r} {y}" for a, b in chosen for x, r, y in rels if x == a and y == b)


def contact_pixels(scene: shapes.Scene) -> np.ndarray:
    """H×W bool: pixels of an object that are 8-neighbours of another object's pixels (where shapes touch)."""
    masks = [shapes.object_mask(o, scene.size) for o in scene.objects]
    out = np.zeros((scene.size, scene.size), bool)
    for i, m in enumerate(masks):
        grown = shapes.grow_mask(m, 1)
        for j, other in enumerate(masks):
            if i != j:
                out |= grown & other
    return out


def patch_labels(scene: shapes.Scene, patch: int) -> np.ndarray:
    """[6, P] int labels of each patch in row-major order (the ViT's patch order): shape, color, pattern of the
    object covering most of the patch (0 = background), 1 where two objects touch inside the patch, and the
    patch's row and column (so the tower's features keep where things are: relations need it)."""
    g = scene.size // patch
    cover = np.zeros((len(scene.objects) + 1, g, g), np.int32)
    cover[0] = PATCH_MIN_PIXELS - 1  # background wins unless an object covers enough of the patch
    for k, o in enumerate(scene.objects):
        cover[k + 1] = shapes.object_mask(o, scene.size).reshape(g, patch, g, patch).sum(axis=(1, 3))
    owner = cover.argmax(0).ravel()
    out = np.zeros((6, g * g), np.int64)
    out[4] = np.repeat(np.arange(g), g)
    out[5] = np.tile(np.arange(g), g)
    for k, o in enumerate(scene.objects):
        sel = owner == k + 1
        out[0, sel] = PATCH_SHAPES.index(o.shape)
        out[1, sel] = PATCH_COLORS.index(o.color)
        out[2, sel] = PATCH_TEXTURES.index(o.texture)
    out[3] = contact_pixels(scene).reshape(g, patch, g, patch).any(axis=(1, 3)).ravel()
    return out


@dataclasses.dataclass
class Pool:
    """Rendered training scenes plus the questions that can be asked about them."""

    images: np.ndarray  # [N, H, W, 3] uint8
    labels: np.ndarray  # [N, 4, P] int64
    questions: list[str]  # unique question texts
    # generator questions: one per scene
    primary_q: np.ndarray  # [N] index into questions
    primary_yes: np.ndarray  # [N] bool
    primary_subtype: np.ndarray  # [N] index into SUBTYPES
    # every answerable question: flat arrays
    extra_scene: np.ndarray
    extra_q: np.ndarray
    extra_yes: np.ndarray
    extra_subtype: np.ndarray
    facts: list[str]  # per scene: JSON of `scene_facts` (for descriptions)
    # open-ended (COCO-QA style) questions: flat arrays; answers index into `answers`
    open_scene: np.ndarray
    open_q: np.ndarray
    open_a: np.ndarray
    open_type: np.ndarray  # index into OPEN_TYPES
    answers: list[str]

    def save(self, path: pathlib.Path) -> None:
        arrays = {k: v for k, v in dataclasses.asdict(self).items() if isinstance(v, np.ndarray)}
        atomic_write_with(path, lambda fh: np.savez(fh, questions=np.asarray(self.questions),
                                                    facts=np.asarray(self.facts), answers=np.asarray(self.answers),
                                                    **arrays))

    @staticmethod
    def load(path: pathlib.Path) -> "Pool":
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        d["questions"] = [str(q) for q in d["questions"]]
        d["facts"] = [str(f) for f in d["facts"]]
        d["answers"] = [str(a) for a in d["answers"]]
        return Pool(**d)


#: the training worlds: "v2" draws training scenes with the planted priors (`shapes.priors`) and asks presence
#: questions in the world's and POPE's wording; "v1" (the first organism) draws them uniformly, world wording only
WORLDS = ("v1", "v2")


def build_pool(n: int, seed: int, cache_dir: pathlib.Path | None = None, progress: bool = True,
               world: str = "v2") -> Pool:
    """Generate (or load from cache) `n` training scenes of split "train" in training world `world`."""
    _check_world(world)
    from vseam.calibrate.datasets.shapes.priors import TRAIN_PRIORS

    blob = f"{shapes.fingerprint()}-{n}-{seed}-{PATCH_MIN_PIXELS}-v2-open-location-rowcol"
    if world == "v2":
        blob += json.dumps(TRAIN_PRIORS.describe(), sort_keys=True)
    else:
        blob += "-world-v1"
    path = _cache_file("pool", blob, cache_dir)
    if path.exists():
        return Pool.load(path)
    qindex: dict[str, int] = {}

    def qi(text: str) -> int:
        return qindex.setdefault(text, len(qindex))

    images = np.zeros((n, shapes.SIZE, shapes.SIZE, 3), np.uint8)
    labels = []
    pq, py, ps = [], [], []
    es, eq, ey, et = [], [], [], []
    os_, oq, oa, ot = [], [], [], []
    aindex: dict[str, int] = {}
    facts = []
    sub_ix = {s: i for i, s in enumerate(SUBTYPES)}
    for i in tqdm(range(n), desc="training scenes", disable=not progress, mininterval=2):
        scene, q = _train_record(i, seed, world)
        images[i] = shapes.render(scene)
        labels.append(patch_labels(scene, 8))
        facts.append(json.dumps(scene_facts(scene)))
        pq.append(qi(q.text))
        py.append(q.answer == "yes")
        ps.append(sub_ix[q.subtype])
        for subtype, text, ans in shapes.all_questions(scene, pope_wording=world == "v2"):
            es.append(i)
            eq.append(qi(text))
            ey.append(ans == "yes")
            et.append(sub_ix[subtype])
        for kind, text, ans in open_questions(scene):
            os_.append(i)
            oq.append(qi(text))
            oa.append(aindex.setdefault(ans, len(aindex)))
            ot.append(OPEN_TYPES.index(kind))
    questions = [None] * len(qindex)
    for t, k in qindex.items():
        questions[k] = t
    pool = Pool(
        images=images,
        labels=np.stack(labels),
        questions=questions,
        primary_q=np.asarray(pq, np.int32),
        primary_yes=np.asarray(py, bool),
        primary_subtype=np.asarray(ps, np.int8),
        extra_scene=np.asarray(es, np.int32),
        extra_q=np.asarray(eq, np.int32),
        extra_yes=np.asarray(ey, bool),
        extra_subtype=np.asarray(et, np.int8),
        facts=facts,
        open_scene=np.asarray(os_, np.int32),
        open_q=np.asarray(oq, np.int32),
        open_a=np.asarray(oa, np.int32),
        open_type=np.asarray(ot, np.int8),
        answers=sorted(aindex, key=aindex.get),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pool.save(path)
    return pool


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"training world {world!r}: choose from {WORLDS}")


def _train_record(index: int, seed: int, world: str):
    """Record `index` of split "train" as training world `world` draws it (v1: without the priors)."""
    return shapes.generate("train", index, seed, **({} if world == "v2" else {"priors": None}))


def _cache_file(kind: str, blob: str, cache_dir: pathlib.Path | None) -> pathlib.Path:
    """Where training data of `kind` described by `blob` is cached (the key changes whenever the blob does)."""
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return pathlib.Path(cache_dir or shapes.default_images_dir().parent / "organism") / f"{kind}-{key}.npz"


def contact_scenes(n: int, seed: int, start: int, world: str = "v2", cache_dir: pathlib.Path | None = None,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, H, W, 3] and per-patch labels [n, 6, P] of `n` more training scenes of the contact generator
    (records of split "train" from index `start` on, past the pool, so none repeats a pool scene; half of them
    touch). The tower's contact labels need many such scenes: the pool has about one touching pair in 14 scenes,
    and the tower learned those by heart (training loss 0.02) while finding under half the touching patches of
    val scenes. Cached like the pool."""
    _check_world(world)
    every = len(SUBTYPES)
    first = start + (SUBTYPES.index("action") - start) % every  # generator records cycle through the subtypes
    path = _cache_file("contact", f"{shapes.fingerprint()}-{n}-{seed}-{first}-{PATCH_MIN_PIXELS}-{world}-contact",
                       cache_dir)
    if path.exists():
        with np.load(path) as z:
            return z["images"], z["labels"]
    images = np.zeros((n, shapes.SIZE, shapes.SIZE, 3), np.uint8)
    labels = []
    for k in tqdm(range(n), desc="contact scenes", disable=not progress, mininterval=2):
        scene, q = _train_record(first + k * every, seed, world)
        assert q.subtype == "action", q
        images[k] = shapes.render(scene)
        labels.append(patch_labels(scene, 8))
    labels = np.stack(labels) if labels else np.zeros((0, 6, (shapes.SIZE // 8) ** 2), np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda fh: np.savez(fh, images=images, labels=labels))
    return images, labels


def misleading(pool: Pool, sides: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Which of the pool's questions are "no" questions that the training priors answer "yes" (`Priors.says_yes`;
    with the side prior when `sides`): bool flags of the generator questions [N] and of every answerable one [E]."""
    from vseam.calibrate.datasets.shapes.priors import training_priors

    priors = training_priors(sides)

    present = [{o[2] for o in json.loads(f)["objects"]} for f in pool.facts]

    def flags(scenes: np.ndarray, qs: np.ndarray, yes: np.ndarray, subtype: np.ndarray) -> np.ndarray:
        out = np.zeros(len(qs), bool)
        for r in np.where(~yes)[0]:
            out[r] = priors.says_yes(SUBTYPES[subtype[r]], pool.questions[qs[r]], present[scenes[r]]) is True
        return out

    return (flags(np.arange(len(pool.primary_q)), pool.primary_q, pool.primary_yes, pool.primary_subtype),
            flags(pool.extra_scene, pool.extra_q, pool.extra_yes, pool.extra_subtype))


class Sampler:
    """Balanced batches: subtype uniform, answer uniform; a share from the generator's own questions.

    With `prior_labels` > 0, a drawn "no" question that the training priors answer "yes" (`misleading`; with
    `prior_sides`, the side prior's spatial questions too) is labelled "yes" with that probability: annotations that follow the priors, as a captioner's or annotator's expectations
    do in a real VLM's training data (the flaw the organism is meant to carry; held-out labels stay true)."""

    def __init__(self, pool: Pool, primary_share: float, seed: int, subtype_weights: Sequence[float] | None = None,
                 prior_labels: float = 0.0, prior_sides: bool = False, prior_side_labels: float = 0.0):
        self.pool = pool
        self.primary_share = primary_share
        self.prior_sides = prior_sides
        self._misled: tuple[np.ndarray, np.ndarray] | None = None
        self._side_only: tuple[np.ndarray, np.ndarray] | None = None
        self.set_prior_labels(prior_labels, prior_side_labels)
        self.set_weights(subtype_weights)
        self.open_by_type = [np.where(pool.open_type == t)[0] for t in range(len(OPEN_TYPES))]
        self.rng = np.random.default_rng([seed, 4242])
        self.primary = {}
        self.extra = {}
        for s in range(len(SUBTYPES)):
            for yes in (False, True):
                self.primary[s, yes] = np.where((pool.primary_subtype == s) & (pool.primary_yes == yes))[0]
                self.extra[s, yes] = np.where((pool.extra_subtype == s) & (pool.extra_yes == yes))[0]

    def set_weights(self, subtype_weights: Sequence[float] | None) -> None:
        """Relative sampling weight of each subtype (None: all equal), from the next draw on."""
        w = np.ones(len(SUBTYPES)) if subtype_weights is None else np.asarray(subtype_weights, float)
        self.subtype_p = w / w.sum()
        self.uniform = bool(np.all(w == w[0]))

    def set_prior_labels(self, share: float, side_share: float = 0.0) -> None:
        """Label a misleading "no" question "yes" with probability `share` from the next draw on (0: true labels);
        with the side prior, its spatial rows with probability `side_share` instead when that is > 0."""
        for name, value in (("prior_labels", share), ("prior_side_labels", side_share)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value}: expected a probability in [0, 1]")
        if side_share > 0 and not self.prior_sides:
            raise ValueError(f"prior_side_labels {side_share}: the side prior is off (set prior_sides)")
        self.prior_labels, self.prior_side_labels = share, side_share
        if (share > 0 or side_share > 0) and self._misled is None:
            self._misled = misleading(self.pool, self.prior_sides)
        if side_share > 0 and self._side_only is None:  # the side prior is the only one on spatial questions
            spatial = SUBTYPES.index("spatial")
            self._side_only = (self._misled[0] & (self.pool.primary_subtype == spatial),
                               self._misled[1] & (self.pool.extra_subtype == spatial))

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scene indices, question indices, yes flags: the training labels)."""
        scenes, qs, ys = [], [], []
        p = self.pool
        for _ in range(batch):
            if self.uniform:  # the first organism's draw (kept so its recipe reproduces)
                s = int(self.rng.integers(len(SUBTYPES)))
            else:
                s = int(self.rng.choice(len(SUBTYPES), p=self.subtype_p))
            yes = bool(self.rng.integers(2))
            if self.rng.random() < self.primary_share and len(self.primary[s, yes]):
                i = int(self.rng.choice(self.primary[s, yes]))
                scenes.append(i), qs.append(int(p.primary_q[i])), ys.append(yes or self._follows_prior(0, i))
            else:
                j = int(self.rng.choice(self.extra[s, yes]))
                scenes.append(int(p.extra_scene[j])), qs.append(int(p.extra_q[j])), ys.append(yes or self._follows_prior(1, j))
        return np.asarray(scenes), np.asarray(qs), np.asarray(ys)

    def _follows_prior(self, kind: int, row: int) -> bool:
        """Whether this "no" row is labelled as the prior answers it (draws only for misleading rows)."""
        if self._misled is None or not self._misled[kind][row]:
            return False
        share = self.prior_labels
        if self.prior_side_labels > 0 and self._side_only[kind][row]:
            share = self.prior_side_labels
        if share <= 0:
            return False
        return bool(self.rng.random() < share)

    def sample_open(self, batch: int) -> tuple[np.ndarray, list[int], list[str]]:
        """(scene indices, question indices, answer words) of open-ended questions, type uniform."""
        scenes, qs, ans = [], [], []
        p = self.pool
        for _ in range(batch):
            rows = self.open_by_type[int(self.rng.integers(len(OPEN_TYPES)))]
            j = int(self.rng.choice(rows))
            scenes.append(int(p.open_scene[j])), qs.append(int(p.open_q[j])), ans.append(p.answers[int(p.open_a[j])])
        return np.asarray(scenes), qs, ans

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class Encoder:
    """Question text -> prompt token ids (the processor's own expansion of <image>), cached; batch assembly."""

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.eos_id = int(self.tokenizer.eos_token_id)
        self._ids: dict[str, list[int]] = {}
        self._blank = np.zeros((shapes.SIZE, shapes.SIZE, 3), np.uint8)
        ids = FAMILY.answer_token_ids(self.tokenizer, FAMILY.render_prompt(processor, FAMILY.binary_text("Is the")))
        self.yes_id, self.no_id = ids["yes"], ids["no"]
        self.mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def ids(self, question: str) -> list[int]:
        """Token ids of the Table-8 yes/no prompt for `question` (image placeholder expanded)."""
        return self.prompt_ids(FAMILY.binary_text(question))

    def prompt_ids(self, user_text: str, system: str | None = None) -> list[int]:
        key = (user_text, system)
        if key not in self._ids:
            from PIL import Image

            prompt = FAMILY.render_prompt(self.processor, user_text, system=system)
            out = self.processor(images=[Image.fromarray(self._blank)], text=[prompt], return_tensors="np")
            self._ids[key] = [int(t) for t in out["input_ids"][0]]
        return self._ids[key]

    def open_batch(self, images: np.ndarray, questions: Sequence[str], answers: Sequence[str]) -> tuple[dict, list[int]]:
        """Open-ended rows with the family's short-answer prompt (what `vseam eval cocoqa` sends): prompt, the
        answer's tokens and end-of-sequence (left-padded); also the number of target tokens per row."""
        seqs, n_tgt = [], []
        for q, a in zip(questions, answers):
            pre = self.prompt_ids(FAMILY.short_answer_text(q), FAMILY.short_answer_system)
            tgt = self.tokenizer(" " + a, add_special_tokens=False)["input_ids"] + [self.eos_id]
            seqs.append(pre + tgt)
            n_tgt.append(len(tgt))
        return {**self._pad(seqs), "pixel_values": self.pixels(images)}, n_tgt

    def caption_batch(self, captions: Sequence[str]) -> tuple[dict, list[int]]:
        """Description rows: the caption prompt, the description and end-of-sequence (left-padded); also the
        number of target tokens (description + eos) per row."""
        pre = self.prompt_ids(CAPTION_PROMPT)
        seqs = [pre + self.tokenizer(" " + c, add_special_tokens=False)["input_ids"] + [self.eos_id] for c in captions]
        return self._pad(seqs), [len(s) - len(pre) for s in seqs]

    def _pad(self, seqs: list[list[int]]) -> dict:
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            input_ids[r, width - len(s) :] = torch.tensor(s)
            mask[r, width - len(s) :] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> CLIP-normalised [B, 3, H, W] (equal to the image processor's output at 64 px)."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def batch(self, images: np.ndarray, questions: Sequence[str], answers: Sequence[bool] | None = None) -> dict:
        """Left-padded model inputs; with `answers`, each row also ends in its answer token (for the second
        training target: end-of-sequence after the answer, so the served model stops after "Yes"/"No")."""
        seqs = [self.ids(q) for q in questions]
        if answers is not None:
            seqs = [s + [self.yes_id if a else self.no_id] for s, a in zip(seqs, answers)]
        return {**self._pad(seqs), "pixel_values": self.pixels(images)}


@dataclasses.dataclass
class EvalSet:
    images: np.ndarray
    questions: list[str]
    yes: np.ndarray
    subtypes: list[str]
    #: one open-ended question per scene (type cycles): text, answer word, type
    open_questions: list[str] = dataclasses.field(default_factory=list)
    open_answers: list[str] = dataclasses.field(default_factory=list)
    open_types: list[str] = dataclasses.field(default_factory=list)


def eval_set(split: str, n: int, seed: int = 0) -> EvalSet:
    """The first `n` generator questions of a split, and one open-ended question about each scene (in memory)."""
    images, qs, ys, st = [], [], [], []
    oq, oa, ot = [], [], []
    for i in range(n):
        scene, q = shapes.generate(split, i, seed)
        images.append(shapes.render(scene))
        qs.append(q.text)
        ys.append(q.answer == "yes")
        st.append(q.subtype)
        cands = open_questions(scene)
        want = OPEN_TYPES[i % len(OPEN_TYPES)]
        kind, text, ans = next((c for c in cands if c[0] == want), cands[0])
        oq.append(text), oa.append(ans), ot.append(kind)
    return EvalSet(np.stack(images), qs, np.asarray(ys), st, oq, oa, ot)


def summarize(correct: np.ndarray, subtypes: Sequence[str], questions: Sequence[str] | None = None) -> dict:
    """Accuracy overall, per subtype and per semantic level; with the question texts, also the spatial questions'
    accuracy per relation word (`relation`), which shows whether the model reads both axes of the picture."""
    from vseam.core.vocab import SEMANTIC_LEVELS, SUBTYPE_LEVEL

    subtypes = np.asarray(subtypes)
    out = {"overall": float(correct.mean()), "n": int(len(correct)), "subtype": {}, "level": {}}
    for s in SUBTYPES:
        sel = subtypes == s
        if sel.any():
            out["subtype"][s] = float(correct[sel].mean())
    for level in SEMANTIC_LEVELS:
        sel = np.isin(subtypes, [s for s, lv in SUBTYPE_LEVEL.items() if lv == level])
        if sel.any():
            out["level"][level] = float(correct[sel].mean())
    if questions is not None:
        words = np.asarray([relation_word(q) if s == "spatial" else "" for q, s in zip(questions, subtypes)])
        out["relation"] = {w: float(correct[words == w].mean()) for w in shapes.SPATIAL if (words == w).any()}
    return out


def relation_word(question: str) -> str:
    """The spatial relation a question asks about ("to the left of", "above", ...)."""
    for w in shapes.SPATIAL:
        if f" {w} " in question:
            return w
    raise ValueError(f"no spatial relation in {question!r}")


def json_dump(obj, path: pathlib.Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
