"""Errors a user can cause. Each carries a one-line message that says what is
wrong and how to fix it; the CLI prints it without a traceback."""


class VarfxError(Exception):
    """Base class for every error caused by input or options."""

    exit_code = 1


class InputError(VarfxError):
    """A file is missing, unreadable or malformed."""


class OptionError(VarfxError):
    """An option value is invalid or options do not fit together."""

    exit_code = 2


class ModelError(VarfxError):
    """A model, its weights or its spec do not fit."""


class RefMismatchError(VarfxError):
    """A VCF REF allele disagrees with the FASTA and the policy is 'error'."""
