"""What a trained model is worth: Dice and the averaged-mask baseline, the robustness grid
(corruptions and shifts) and the numbers read off it, surface distances and per-case rows,
example predictions, convergence of the validation curve, and the robustness figures.

It computes and returns values (`evaluator.RunEvaluation`) and writes nothing: the run folder's
owner (`pejax.runs.outputs`) writes them. May import the shared modules, `pejax.models` and
`pejax.data`. `grid_results`, `convergence` and `figures` load no JAX, for the report.
"""
