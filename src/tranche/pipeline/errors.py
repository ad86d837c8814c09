"""Errors of the pipeline context.

::

    TrancheError
    └── PipelineError
        ├── PipelineDeclarationError   pipelines or stages declared inconsistently (a programming error)
        ├── InvalidStageOverrideError  a TRANCHE_STAGE_* setting that is not a positive number
        ├── ItemNotFoundError          an item id that names no pipeline item
        └── ItemNotRetryableError      a re-queue asked for an item that is neither parked nor failed

:class:`tranche.pipeline.RetryableError` and :class:`tranche.pipeline.TerminalError` are not in this tree: they
are signals a stage raises to tell the runner what to do with an item, not errors of the pipeline itself.
"""

from __future__ import annotations

from tranche.shared.errors import TrancheError


class PipelineError(TrancheError):
    """Base of every error the pipeline context raises on purpose."""

    code = "pipeline_error"


class PipelineDeclarationError(PipelineError):
    """Pipelines or stages are declared inconsistently: a duplicate stage name, an unknown next stage, a
    concurrency below one. ``record`` names the pipeline or stage."""

    code = "pipeline_declaration"


class InvalidStageOverrideError(PipelineError):
    """A stage override from the environment is not a positive number; ``field`` is the variable."""

    code = "invalid_stage_override"


class ItemNotFoundError(PipelineError):
    """No pipeline item has this id; ``record`` is the id."""

    code = "not_found"


class ItemNotRetryableError(PipelineError):
    """Only a parked or failed item can be re-queued (the others are still on their way, or done);
    ``record`` is the id and the message says its status."""

    code = "item_not_retryable"


ItemNotParkedError = ItemNotRetryableError
"""The former name of :class:`ItemNotRetryableError`, from when only parked items could be re-queued."""
