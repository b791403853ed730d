"""Open-ended single-word questions about `shapes` scenes, in COCO-QA's three kept types (color, object,
location): what shapes-COCO-QA asks and what the organism is trained to answer with the family's short-answer
prompt.

* color:    "What is the color of the star?"       -> "yellow"
* object:   "What is the blue object?"             -> "ring"    (asked only when that colour is unique in the scene;
            else "What is the striped blue object?" when colour + pattern are unique)
* location: "Where is the star?"                   -> left / right / top / bottom / middle (`location_word`)
"""

from __future__ import annotations

from vseam.calibrate.datasets.shapes.world import SIZE, Obj, Scene

TYPES = ("color", "object", "location")
LOCATIONS = ("left", "right", "top", "bottom", "middle")
#: an object whose centre is within this many pixels of the image centre on both axes is in the "middle"
MIDDLE = 10


def location_word(obj: Obj, size: int = SIZE) -> str:
    """Where an object is, in one word: the side its centre leans to most (horizontal wins a tie), or "middle"."""
    dx, dy = obj.center[0] - size / 2, obj.center[1] - size / 2
    if abs(dx) <= MIDDLE and abs(dy) <= MIDDLE:
        return "middle"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def open_questions(scene: Scene) -> list[tuple[str, str, str]]:
    """Every (type, question, answer) of the three templates with a unique answer in `scene`."""
    out = []
    for o in scene.objects:
        out.append(("color", f"What is the color of the {o.shape}?", o.color))
        out.append(("location", f"Where is the {o.shape}?", location_word(o, scene.size)))
        same_color = [p for p in scene.objects if p.color == o.color]
        if len(same_color) == 1:
            out.append(("object", f"What is the {o.color} object?", o.shape))
        elif sum(p.texture == o.texture for p in same_color) == 1:
            out.append(("object", f"What is the {o.texture} {o.color} object?", o.shape))
    return out
