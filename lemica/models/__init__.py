"""Models shipped with lemica; `tiny_t2v` is the embedded default text-to-video pipeline."""
