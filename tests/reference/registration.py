"""Tables of references keyed by piece class name, and what a missing one says."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


class MissingReference(AssertionError):
    """A piece of a registered rule has no reference in tests/reference."""


class Table(dict):
    """`{piece class name: reference}`, filled by the `register` decorator.

    Args:
        role: `"when"`, `"where"` or `"how"`.
        module: The file of tests/reference holding the references.
        contract: What a reference of this role takes and returns (for
            the message when one is missing).
    """

    def __init__(self, role, module, contract):
        super().__init__()
        self.role = role
        self.module = module
        self.contract = contract

    def register(self, class_name, **extra):
        """Decorator: the decorated function is the reference of `class_name`."""
        def decorate(function):
            if class_name in self:
                raise ValueError(f"two {self.role} references for {class_name!r}")
            self[class_name] = function
            for key, value in extra.items():
                setattr(function, key, value)
            return function
        return decorate

    def lookup(self, class_name, rule=""):
        """The reference of `class_name`; raises `MissingReference` naming where to add it."""
        if class_name not in self:
            path = os.path.join("tests", "reference", os.path.basename(self.module))
            raise MissingReference(
                f"{rule + ': ' if rule else ''}the {self.role} piece {class_name!r} has no "
                f"NumPy reference. Add one to {path} with "
                f"@{self.role.upper()}_REFERENCES.register({class_name!r}): {self.contract} "
                f"(references exist for {sorted(self)})."
            )
        return self[class_name]
