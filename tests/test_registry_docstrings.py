"""The docstrings list every registered rule, generated from the registry."""

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms import registry


def test_every_registered_name_alias_label_and_citation_is_described():
    text = registry.describe()
    for entry in registry.entries():
        for name in (entry.name,) + entry.aliases:
            assert f'"{name}"' in text
        assert f"`{entry.cls.__name__}`" in text
        flat = " ".join(text.split())  # Items wrap across lines.
        assert f'shown as "{entry.label}"' in flat and entry.paper in flat
    assert all(len(line) <= 79 for line in text.splitlines())


def test_the_package_and_algorithms_docstrings_list_every_registered_name():
    for doc in (keras_flat.__doc__, algorithms.__doc__):
        assert registry.PLACEHOLDER not in doc
        for name in algorithms.names():
            assert f'- "{name}"' in doc


def test_a_newly_registered_rule_appears_and_unregistering_removes_it():
    class Sharper(algorithms.SAM):
        pass

    try:
        registry.register("sharper", Sharper, "Sharper SAM", aliases=("sharper-sam",),
                          paper="Nobody et al., 2099")
        flat = " ".join(registry.describe().split())
        assert '- "sharper", also "sharper_sam": `Sharper`, shown as "Sharper SAM". ' \
               "Nobody et al., 2099." in flat
    finally:
        registry.unregister("sharper")
    assert "sharper" not in registry.describe() and "sharper" not in algorithms.names()
    assert registry.lookup("sharper_sam") is None


def test_a_placeholder_line_takes_the_list_at_its_indentation():
    doc = "Summary.\n\n    Args:\n        algorithm: One of\n\n            {registered_rules}\n"
    filled = registry.fill_docstring(doc)
    assert filled.startswith("Summary.\n\n    Args:\n        algorithm: One of\n\n")
    assert '            - "sam": `SAM`' in filled
    assert all(line.startswith("            ") for line in
               filled.split("One of\n\n")[1].splitlines() if line)
    assert registry.fill_docstring(None) is None  # python -OO.
