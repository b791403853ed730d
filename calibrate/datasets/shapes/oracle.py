"""Answering `shapes` questions from a GQA-style scene graph (the ground truth the generator is checked against),
and every question the templates can ask about a scene (the organism's training questions)."""

from __future__ import annotations

from vseam.calibrate.datasets.shapes.world import (COLORS, CONTACT, GROUP_OF, OPPOSITE, SHAPES, SPATIAL, TEXTURES,
                                                   Scene, spatial_holds, touching)

#: the world's own presence wording and POPE's ("Is there a star in the image?")
PRESENCE_TAILS = (" in this picture", " in the image")


def parse_question(text: str) -> tuple[str, ...]:
    """A shapes question's parts: ("presence", shape), ("attr", shape, value) or ("rel", shape, relation, shape)."""
    t = text.strip().rstrip("?")
    for tail in PRESENCE_TAILS:
        if t.startswith("Is there a ") and t.endswith(tail):
            return ("presence", t[len("Is there a ") : -len(tail)])
    if not t.startswith("Is the "):
        raise ValueError(f"not a shapes question: {text!r}")
    words = t[len("Is the ") :]
    subject, rest = words.split(" ", 1)
    if rest in COLORS or rest in TEXTURES:
        return ("attr", subject, rest)
    for rel in list(SPATIAL) + [CONTACT]:
        if rest.startswith(rel + " the "):
            return ("rel", subject, rel, rest[len(rel + " the ") :])
    raise ValueError(f"not a shapes question: {text!r}")


def answer_from_graph(graph: dict, subtype: str | None, text: str) -> str:
    """yes/no for a shapes question, read off a GQA-style scene graph (objects are referred to by name)."""
    objs = graph["objects"]
    by_name = {o["name"]: (oid, o) for oid, o in objs.items()}
    p = parse_question(text)
    if p[0] == "presence":
        return "yes" if p[1] in by_name else "no"
    if p[1] not in by_name:
        raise ValueError(f"question {text!r} names a {p[1]} the scene does not contain")
    _, subj = by_name[p[1]]
    if p[0] == "attr":
        return "yes" if p[2] in subj["attributes"] else "no"
    other = by_name.get(p[3])
    if other is None:
        raise ValueError(f"question {text!r} names a {p[3]} the scene does not contain")
    return "yes" if any(r["object"] == other[0] and r["name"] == p[2] for r in subj["relations"]) else "no"


def all_questions(scene: Scene, pope_wording: bool = True) -> list[tuple[str, str, str]]:
    """Every (subtype, question, answer) this world's templates can ask about `scene` with a definite answer.

    Spatial questions are asked only about pairs where the relation or its opposite holds (no ambiguous pairs).
    Used to get many questions out of one rendered training image.
    """
    out = []
    for o in scene.objects:
        for c in COLORS:
            out.append(("color", f"Is the {o.shape} {c}?", "yes" if c == o.color else "no"))
        for t in TEXTURES:
            out.append(("material", f"Is the {o.shape} {t}?", "yes" if t == o.texture else "no"))
    present = {o.shape for o in scene.objects}
    for s in SHAPES:
        for tail in PRESENCE_TAILS if pope_wording else PRESENCE_TAILS[:1]:
            out.append((GROUP_OF[s], f"Is there a {s}{tail}?", "yes" if s in present else "no"))
    for a in scene.objects:
        for b in scene.objects:
            if a.id == b.id:
                continue
            for rel in SPATIAL:
                if spatial_holds(a, b, rel):
                    out.append(("spatial", f"Is the {a.shape} {rel} the {b.shape}?", "yes"))
                elif spatial_holds(a, b, OPPOSITE[rel]):
                    out.append(("spatial", f"Is the {a.shape} {rel} the {b.shape}?", "no"))
            out.append(("action", f"Is the {a.shape} {CONTACT} the {b.shape}?", "yes" if touching(a, b) else "no"))
    return out
