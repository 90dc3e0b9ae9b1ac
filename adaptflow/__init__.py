"""adaptflow: learn and deploy adaptive workflow orchestrators.

Importing the package has no side effects beyond what its rooms declare; see README.md."""

__version__ = "0.1.0"
