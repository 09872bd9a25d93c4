"""The demo and its data: ``digits`` (the digits CNN, pinned weights, ``run_demo``) and ``synthetic``
(conveyor scenes for detection). Applications of the public API, above the library.
"""

from __future__ import annotations

from .digits import (
                     DIGITS_SPEC,
                     IMAGE_SIZE,
                     PINNED_SHA256,
                     PINNED_WEIGHTS,
                     build_digits_cnn,
                     default_cache_dir,
                     digits_data,
                     run_demo,
                     train_digits_cnn,
                     weights_digest,
)

__all__ = ["DIGITS_SPEC", "IMAGE_SIZE", "PINNED_SHA256", "PINNED_WEIGHTS", "build_digits_cnn", "default_cache_dir", "digits_data",
           "run_demo", "train_digits_cnn", "weights_digest"]
