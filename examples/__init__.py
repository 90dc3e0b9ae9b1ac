"""Example applications that adaptflow observes and manages from the outside. Importable from a
checkout's root (``python -m examples.etl_app.produce``); not part of the installed adaptflow
package (pyproject ships ``adaptflow`` only)."""
