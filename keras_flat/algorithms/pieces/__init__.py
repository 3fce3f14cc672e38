"""The pieces update rules are made of: when a step perturbs, where, and how.

`when` holds schedules (`Schedule`), `where` perturbations (`Perturbation`)
and `how` combiners (`Combiner`); `radius` the radius arguments' schedules.
`keras_flat.algorithms.Composite(where=..., how=..., when=...)` composes
them into a rule.
"""
