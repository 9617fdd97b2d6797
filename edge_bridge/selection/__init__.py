"""Position selection beyond the paper's two stages: the label-free score, trial trainings, latency.

``score``    the label-free score one trial or one checkpoint gets (shared with ``train``'s checkpoint rule)
``trial``    cheap shortlist -> successive-halving trial trainings -> the chosen (i, j), every candidate kept
``latency``  a candidate's deployed cost: target_front[:i] + bridge + source_back[j:] as ``export`` makes them

The paper's two-stage rule stays in :mod:`edge_bridge.select` (``select --rule paper``). Nothing is imported
here, so ``import edge_bridge.selection.score`` stays free of torch.
"""
