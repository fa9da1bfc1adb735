"""Training: the per-worker loop (:mod:`engine.training.loop`) and what it needs. Only the
``*_context`` adapters know about Ray; the loop itself runs with or without it."""
