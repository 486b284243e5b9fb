"""Quiet third-party libraries: lemica prints its own progress (the command line and the bench's tuning workers)."""
from __future__ import annotations

import functools


@functools.cache
def quiet_libraries() -> None:
    """Silence what transformers and diffusers print on every load (torchvision fallbacks, "Loading ..." bars,
    dtype notes): lemica's commands print their own progress. Their errors still show, and so do the hub's
    download bars. Called by every command that loads a pipeline, before it imports one."""
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub
    import transformers.utils.logging as transformers_logging

    downloads_shown = not hub.are_progress_bars_disabled()
    for logging in (transformers_logging, diffusers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
    if downloads_shown:  # transformers' switch turns off the hub's download bars too
        hub.enable_progress_bars()
    # cache-dit (a bench peer) logs "[Cache-DiT] ..." at info level: lemica.cli sets its level before it is
    # imported; loggers of an earlier import are set here.
    import logging as std_logging

    for name in list(std_logging.root.manager.loggerDict):
        if name.split(".")[0] in ("cache_dit", "CACHE_DIT"):
            std_logging.getLogger(name).setLevel(std_logging.WARNING)
