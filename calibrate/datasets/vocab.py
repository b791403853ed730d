"""Small GQA-style vocabularies: colours (with an sRGB value for recolouring), materials, object categories of the
three V-SEAM object subtypes, spatial relations with their opposites, and action verbs with plausible substitutes.

Used by the GQA loader (to classify official questions into subtypes) and by the rule-based counterfactual
rewriter (to pick a different value of the same kind).
"""

from __future__ import annotations

import re

#: colour name -> representative sRGB (what the recolour editor paints towards)
COLORS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "silver": (192, 192, 196),
    "red": (200, 30, 30),
    "maroon": (120, 20, 30),
    "pink": (240, 130, 170),
    "orange": (240, 130, 20),
    "yellow": (240, 220, 40),
    "gold": (212, 175, 55),
    "tan": (210, 180, 140),
    "beige": (225, 210, 175),
    "cream": (245, 235, 200),
    "khaki": (195, 176, 145),
    "brown": (120, 70, 30),
    "green": (40, 160, 50),
    "blue": (30, 80, 210),
    "navy": (20, 30, 100),
    "teal": (0, 128, 128),
    "purple": (130, 50, 160),
    "blond": (230, 205, 120),
    "brunette": (90, 55, 30),
    "dark": (40, 40, 40),
    "light": (220, 220, 220),
}

#: colours a counterfactual may switch to: saturated, clearly distinct hues (no "dark"/"light"/"blond")
TARGET_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "white", "black", "brown")

MATERIALS = (
    "wood", "metal", "plastic", "glass", "concrete", "brick", "leather", "porcelain", "stone", "paper",
    "cement", "steel", "wire", "chrome", "wool", "cobblestone", "crystal", "wicker", "marble", "denim",
    "rubber", "aluminum", "sand", "cloth", "fabric", "ceramic", "cotton", "silk", "iron", "tile",
)  # fmt: skip
#: adjective forms used in GQA questions ("Is the fence wooden?") -> material noun
MATERIAL_ADJECTIVES = {"wooden": "wood", "metallic": "metal", "hardwood": "wood", "metal": "metal"}
#: materials a counterfactual may switch to (common and easy to depict)
TARGET_MATERIALS = ("wood", "metal", "plastic", "glass", "stone", "brick", "leather", "paper")

ANIMALS = (
    "antelope", "bat", "bear", "bird", "cat", "cow", "deer", "dog", "dolphin", "donkey", "duck", "elephant",
    "frog", "giraffe", "goat", "horse", "kitten", "lamb", "lion", "monkey", "ostrich", "panda", "parrot",
    "polar bear", "puppy", "rhino", "seagull", "seal", "sheep", "wolf", "zebra", "pigeon", "chicken", "owl",
    "squirrel", "tiger", "fox", "rabbit", "mouse", "fish", "goose", "swan", "camel", "pig", "calf",
)  # fmt: skip
VEHICLES = (
    "airplane", "bicycle", "bike", "boat", "bus", "car", "fire truck", "food truck", "motorcycle", "sailboat",
    "scooter", "taxi", "train", "truck", "van", "jeep", "tractor", "helicopter", "ship", "skateboard",
    "shopping cart", "wagon", "trailer", "minivan", "suv", "ambulance", "tram", "canoe", "kayak", "jet",
)  # fmt: skip
INDOOR = (
    "bed", "bookcase", "bottle", "cabinet", "cell phone", "chair", "clock", "coffee maker", "coffee pot",
    "coffee table", "computer", "computer mouse", "couch", "cup", "curtain", "desk", "dining table", "dishwasher",
    "door", "drawer", "fan", "fork", "kettle", "keyboard", "knife", "lamp", "laptop", "microwave", "mirror",
    "mixer", "monitor", "mug", "nightstand", "oven", "pan", "phone", "piano", "pillow", "plate", "pot",
    "refrigerator", "remote control", "shelf", "sofa", "speaker", "spoon", "table", "tablecloth", "teddy bear",
    "television", "toaster", "towel", "toy", "vase", "sink", "toilet", "bowl", "blender", "candle", "rug",
)  # fmt: skip
#: object subtype -> category vocabulary
CATEGORIES: dict[str, tuple[str, ...]] = {"animal": ANIMALS, "vehicle": VEHICLES, "indoor": INDOOR}

#: spatial relation -> its opposite (both directions listed)
SPATIAL_OPPOSITES: dict[str, str] = {}
for _a, _b in (
    ("to the left of", "to the right of"),
    ("above", "below"),
    ("in front of", "behind"),
    ("on top of", "under"),
    ("on", "under"),
    ("near", "far from"),
    ("next to", "far from"),
    ("beside", "far from"),
    ("inside", "outside"),
    ("underneath", "on top of"),
):
    SPATIAL_OPPOSITES.setdefault(_a, _b)
    SPATIAL_OPPOSITES.setdefault(_b, _a)

#: relations that a horizontal / vertical mirror of one object turns into their opposite
HORIZONTAL_RELATIONS = ("to the left of", "to the right of")
VERTICAL_RELATIONS = ("above", "below")

#: action -> a plausible different action on the same objects (Table 6 style: riding -> feeding)
ACTION_SUBSTITUTES: dict[str, str] = {
    "holding": "throwing",
    "holding onto": "letting go of",
    "carrying": "dropping",
    "riding": "feeding",
    "riding on": "standing next to",
    "eating": "smelling",
    "eating from": "looking at",
    "sitting on": "standing on",
    "sitting in": "standing in",
    "sitting at": "standing at",
    "sitting on top of": "standing on top of",
    "standing on": "lying on",
    "standing in": "sitting in",
    "standing near": "sitting near",
    "standing by": "sitting by",
    "walking on": "lying on",
    "walking in": "sitting in",
    "walking down": "running down",
    "walking with": "fighting with",
    "wearing": "holding",
    "touching": "kicking",
    "driving": "pushing",
    "looking at": "touching",
    "watching": "ignoring",
    "using": "throwing",
    "playing with": "sleeping next to",
    "pulling": "pushing",
    "pushing": "pulling",
    "throwing": "catching",
    "catching": "throwing",
    "feeding": "riding",
    "hitting": "holding",
    "drinking": "spilling",
    "lying on": "standing on",
    "jumping on": "sitting on",
    "jumping in": "sitting in",
    "staring at": "walking away from",
    "covered by": "next to",
    "covered with": "next to",
    "covering": "next to",
    "leaning over": "standing next to",
    "jumping over": "standing next to",
    "with": "without",
}


def is_action(relation: str) -> bool:
    """True for verb relations ("holding", "sitting on"), false for purely spatial ones ("behind")."""
    rel = relation.strip().lower()
    if rel in ACTION_SUBSTITUTES:
        return True
    if rel in SPATIAL_OPPOSITES:
        return False
    return any(w.endswith("ing") for w in rel.split())


def category_of(name: str) -> str | None:
    """animal / vehicle / indoor for an object name (plural forms accepted), else None."""
    n = singular(name.strip().lower())
    for cat, names in CATEGORIES.items():
        if n in names:
            return cat
    return None


def singular(word: str) -> str:
    """A light-weight singular for GQA object names ("zebras" -> "zebra", "buses" -> "bus", "wolves" -> "wolf")."""
    irregular = {"wolves": "wolf", "mice": "mouse", "geese": "goose", "sheep": "sheep", "people": "person"}
    if word in irregular:
        return irregular[word]
    for suffix, repl in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("uses", "us"), ("xes", "x")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            return word[: -len(suffix)] + repl
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def find_word(text: str, words) -> str | None:
    """The longest of `words` that occurs in `text` as whole words (case-insensitive), or None."""
    low = text.lower()
    for w in sorted(words, key=len, reverse=True):
        if re.search(r"(?<![a-z])" + re.escape(w) + r"(?![a-z])", low):
            return w
    return None
