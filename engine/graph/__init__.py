"""Graph side: train/validation/test splits, the heterogeneous graph, and the subgraph sampler."""
