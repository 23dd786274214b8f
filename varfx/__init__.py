"""varfx: score genetic variants with sequence-to-function deep-learning models."""

__version__ = "0.2.0"

from .errors import VarfxError  # noqa: E402


def score_vcf(*args, **kwargs):
    """Score a VCF; see :func:`varfx.run.score_vcf`."""
    from .run import score_vcf as _score

    return _score(*args, **kwargs)


def read_scores(path):
    """Read a scores HDF5 file back; see :func:`varfx.results.read_scores`."""
    from .results import read_scores as _read

    return _read(path)


def load_backend(name, weights=None, **options):
    """Load a backend by name; see :func:`varfx.backends.load_backend`."""
    from .backends import load_backend as _load

    return _load(name, weights, **options)


__all__ = ["__version__", "VarfxError", "score_vcf", "read_scores", "load_backend"]
