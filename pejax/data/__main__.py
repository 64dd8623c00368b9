"""`python -m pejax.data --dataset=NAME --image_size=S [--picture=P]`: builds datasets and draws
examples of them (`pejax.data.datasets.main`; `--help` lists the options)."""

from pejax.data import datasets

datasets.main()
