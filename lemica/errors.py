"""Every error lemica raises on purpose, under one base class.

``LemicaError`` subclasses ``ValueError``: each of these says that an input (a file, a setting, a model, a
pipeline call) cannot be used as given, and the message says why and what to do. Catch ``LemicaError`` to
handle all of them; the command line turns them into one-line messages instead of tracebacks.
"""
from __future__ import annotations


class LemicaError(ValueError):
    """Base class of lemica's errors."""

    def __str__(self) -> str:  # KeyError subclasses below would otherwise print their message quoted
        return Exception.__str__(self)


class GraphFormatError(LemicaError):
    """An error graph (object or file) breaks the format; the message names the offending field."""


class ScheduleFormatError(LemicaError):
    """A schedule (object or file) breaks the format, or cannot be expressed in another tool's format."""


class UnsupportedFillRuleError(ScheduleFormatError):
    """The schedule uses a fill rule that the requested export (e.g. cache-dit's step mask) cannot express."""


class FillRuleError(LemicaError):
    """A schedule's fill rule cannot run here: an unknown rule, a segment without the history the rule reads, or a
    model whose output lemica cannot turn into a velocity (the message names the segment or the setting)."""


class PlanningError(LemicaError):
    """The request cannot be met (infeasible budget, unknown objective, ...); the message says why."""


class PresetNotFoundError(LemicaError, KeyError):
    """No published step list under that name or budget (a ``KeyError`` too: it is a failed lookup)."""


class UnsupportedModelError(LemicaError):
    """The transformer's structure is not one lemica can cache without per-model code."""


class UnsupportedDiffusersError(LemicaError, ImportError):
    """The installed diffusers lacks an internal that lemica's hooks rely on."""


class ScheduleMismatchError(LemicaError):
    """The schedule was planned for a different number of denoising steps than the pipeline runs."""


class WorkdirMismatchError(LemicaError):
    """The work directory holds samples of a calibration with other settings; resuming would mix them."""


class CalibrationError(LemicaError):
    """A calibration input or an intermediate result cannot be used (bad prompts, seeds, steps, sample files)."""


class InvalidArgumentError(LemicaError):
    """An argument has a value the call cannot use (a device this machine lacks, an unknown dtype, a size the
    model cannot take, a non-positive frame rate ...); the message names the argument."""


class ConcurrentCallError(LemicaError):
    """A lemica-cached pipeline was called from a second thread while another thread's call was in progress.
    Pipelines are not thread-safe (diffusers keeps per-call state on the pipeline and its scheduler): use one
    pipeline per thread, or serialise the calls with a lock."""


class OutputPathError(LemicaError):
    """An output path names something lemica will not write over: a directory, FIFO, device or socket (lemica
    writes regular files only, and never removes what it refuses)."""


class InputFileError(LemicaError):
    """An input file cannot be read as lemica expects: not a regular file (a FIFO, a device, a stream), larger than
    any file lemica writes, or nested deeper than any file lemica writes; the message names the file."""


class OutputWriteError(OSError):
    """Writing an output failed in the operating system (disk full, read-only, permission); the message names the
    file. An ``OSError`` (the errno is kept), not a ``LemicaError``: the input was fine, the disk was not."""

    def __str__(self) -> str:
        return self.strerror or Exception.__str__(self)


class CacheStateError(LemicaError, RuntimeError):
    """The pipeline's cache is not in the state the call needs: caching is not enabled on it (never, or
    ``disable_cache`` was called), or its scheduler was replaced after ``enable_cache``. A ``RuntimeError`` too."""


class UnknownFillRuleError(ScheduleFormatError, FillRuleError):
    """A schedule names a fill rule the runtime does not know (refused when the schedule is built or read; a
    ``FillRuleError`` too, as it was when only the runtime checked)."""
