"""The `shapes` world: synthetic scenes with a known scene graph, binary questions for the 7 V-SEAM subtypes, and
exact counterfactual images (the same scene re-rendered with one change).

A scene is a 64×64 picture of 2-4 flat shapes on a lightly noisy gray background. Each object has

* a shape class (the "object" vocabulary), grouped three ways so the object-presence subtypes of the paper
  (animal / vehicle / indoor) map onto shape groups: round (circle, ring), angular (square, diamond),
  pointed (triangle, star);
* a color (red, green, blue, yellow, purple, orange) and
* a surface pattern standing in for "material" (plain, striped, dotted, checkered).

Question templates (one per subtype, Table 9 of the paper mapped onto this world):

========  =========================================================  ==========================
subtype   question                                                    edit that flips the answer
========  =========================================================  ==========================
color     Is the square red?                                          recolor the square
material  Is the square striped?                                      re-pattern the square
animal    Is there a circle in this picture?  (round group)           remove it / turn the other
vehicle   Is there a square in this picture?  (angular group)         round shape into it
indoor    Is there a star in this picture?    (pointed group)
spatial   Is the circle to the left of / right of / above / below    mirror the circle about the
          the square?                                                 square's center
action    Is the circle touching the square?                          pull apart / push together
========  =========================================================  ==========================

Every record is generated from (split, seed, index) alone, so any record, its image and its counterfactual can be
re-created bit-for-bit. Answers are exactly balanced (yes for even rounds, no for odd) and subtypes cycle.

The package: `world` (vocabulary, scenes, geometry, renderer, scene graph), `questions` (the generator), `oracle`
(answers read off a scene graph), `loader` (`--dataset shapes` records), `edits` (exact counterfactuals and the
edit-agreement metric).
"""

from vseam.calibrate.datasets.shapes.edits import ExactEdit, compare_edit, counterfactual, exact_pair
from vseam.calibrate.datasets.shapes.loader import (DATASET, default_images_dir, load_shapes, make_record, qid_of,
                                                    scene_of)
from vseam.calibrate.datasets.shapes.oracle import all_questions, answer_from_graph
from vseam.calibrate.datasets.shapes.questions import (DEFAULT_SPLIT_SIZE, EVAL_SPLITS, SPLIT_SEEDS, Question,
                                                       apply_edit, generate)
from vseam.calibrate.datasets.shapes.world import (CONTACT, COLORS, GROUP_OF, OPPOSITE, SHAPE_GROUPS, SHAPES, SIZE,
                                                   SPATIAL, TEXTURES, WORLD_VERSION, Obj, Scene, fingerprint,
                                                   grow_mask, in_bounds, object_box, object_mask, render, render_image,
                                                   scene_graph, spatial_holds, touching, world_description)

__all__ = [
    "COLORS", "CONTACT", "DATASET", "DEFAULT_SPLIT_SIZE", "EVAL_SPLITS", "ExactEdit", "GROUP_OF", "OPPOSITE", "Obj",
    "Question",
    "SHAPES", "SHAPE_GROUPS", "SIZE", "SPATIAL", "SPLIT_SEEDS", "Scene", "TEXTURES", "WORLD_VERSION",
    "all_questions", "answer_from_graph", "apply_edit", "compare_edit", "counterfactual", "default_images_dir",
    "exact_pair", "fingerprint", "generate", "grow_mask", "in_bounds", "load_shapes", "make_record",
    "object_box", "object_mask", "qid_of", "render", "render_image", "scene_graph", "scene_of", "spatial_holds",
    "touching", "world_description",
]
