"""gatrec engine: data ingest, graph building, sampling, GAT models, training and evaluation.

Imports flow one way: data -> graph -> models -> eval -> training. Nothing in here imports Ray
except `engine.training.ray_*` modules, which wrap the plain per-worker loop. The layout and the
data flow of a run, in one diagram: docs/architecture.md.
"""
