"""A sweep's report from its folder: finished runs grouped into settings with statistics over
seeds, paired comparisons and verdicts on the paper's claims, the paper's numbers beside ours,
report.md and its figures. `python -m pejax.reporting --workdir=W` writes it.

May import the shared modules, `pejax.runs` (to read run folders) and the JAX-free modules of
`pejax.evaluation`; it loads no JAX, so a report is written anywhere the files are.
"""
