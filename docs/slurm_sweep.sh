#!/bin/bash
# A pejax sweep as a SLURM job array: each task trains its share of the sweep's runs
# (--shard=I/N) into one workdir that every node sees; the last task to finish writes
# report.md. From the repository root, after building the datasets once (so that the tasks only
# read them):
#
#   python -m pejax.datasets --dataset=jsrt,acdc --image_size=256 --manual_dir=PATH
#   sbatch docs/slurm_sweep.sh                                   # 8 tasks, configs/paper/all.py
#   CONFIG=configs/paper/phantom_all.py WORKDIR=runs/phantom_paper sbatch --array=0-15 docs/slurm_sweep.sh
#
# The array must count from 0 (--array=0-N-1). Runs are dealt in whole programs (runs trained
# together, up to max_models_per_program = 12), so a sweep of P programs keeps at most P tasks
# busy; add --config.max_models_per_program=1 to deal single runs. A requeued or re-submitted
# task skips its finished runs and resumes the others from their checkpoints. If a task fails,
# submit it again (e.g. --array=3), or write the report of what finished with
# python -m pejax.report --workdir=$WORKDIR.
#SBATCH --job-name=pejax-sweep
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=pejax-sweep-%A_%a.log

set -euo pipefail
CONFIG=${CONFIG:-configs/paper/all.py}
WORKDIR=${WORKDIR:-runs/paper}

python main.py --config="$CONFIG" --workdir="$WORKDIR" \
  --shard="$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"
