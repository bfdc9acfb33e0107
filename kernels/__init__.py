"""Real kernels behind a selection (torch + FlashInfer); imported only on demand."""
