"""Non-default arguments of each registered rule, for the registry-driven tests.

Every argument a rule takes that changes its behaviour is set to a value
other than its default, so a test that builds each rule from this table
exercises its options. A rule missing from the table is built with its own
defaults.
"""

RULE_ARGUMENTS = {
    "sam": {"rho": 0.07, "interval": 2, "start": 1, "perturbation_sync": "replica"},
    "asam": {"rho": 0.9, "eta": 0.02, "interval": 2},
    "fsam": {"rho": 0.08, "full_gradient_weight": 0.6, "ema_decay": 0.5, "interval": 2},
    "rs": {"rho": 0.3, "tolerance": 1e3, "perturbed_lr_scale": 2.0, "project": False,
           "antithetic": True, "interval": 2},
    "sa": {"rho": 0.1, "tolerance": 1e3, "perturbed_lr_scale": 0.5, "examples": 3,
           "jitter": 1e-4, "center": True, "antithetic": True, "start": 1},
    "gsam": {"rho": 0.1, "gap_weight": 0.3, "interval": 2, "rho_min": 0.02},
    "looksam": {"rho": 0.1, "interval": 3, "reuse_weight": 0.5},
    "aesam": {"rho": 0.1, "ema_decay": 0.8, "threshold_start": 0.0, "threshold_end": 0.0},
    "rwp": {"sigma": 0.05, "perturbed_weight": 0.7, "include_offsets": True, "interval": 2},
    "arwp": {"sigma": 0.05, "perturbed_weight": 0.7, "adaptation": 0.5, "ema_decay": 0.9},
}


def build(entry, **overrides):
    """The registered rule of `entry` with this table's arguments (and `overrides`)."""
    return entry.cls(**{**RULE_ARGUMENTS.get(entry.name, {}), **overrides})
