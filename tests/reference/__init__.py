"""Independent NumPy references of the pieces update rules are made of.

Each role has a table keyed by piece class name: `WHEN_REFERENCES`
(when.py: does a step perturb), `WHERE_REFERENCES` (where.py: the
perturbed gradient `h`, with the step's recorded offsets and examples
checked), `HOW_REFERENCES` (how.py: the update from `g` and `h`). A new
piece adds one entry to its role's module; a rule whose pieces all have
references is covered by the zoo tests with no test edited, and one whose
pieces do not fails, naming the piece and the module. `arguments.py` holds
the arguments each registered rule runs with. Nothing here calls the
package's arithmetic: gradients come from `tf.GradientTape` (tests/zoo.py)
and everything else is NumPy.
"""

from reference.arguments import ARGUMENTS
from reference.how import HOW_REFERENCES
from reference.registration import MissingReference
from reference.step import Draws
from reference.step import Point
from reference.step import check_references
from reference.step import pieces_of
from reference.step import reference_step
from reference.when import WHEN_REFERENCES
from reference.where import WHERE_REFERENCES

__all__ = ["ARGUMENTS", "HOW_REFERENCES", "WHEN_REFERENCES", "WHERE_REFERENCES", "Draws",
           "MissingReference", "Point", "check_references", "pieces_of", "reference_step"]
